//! Which queues the org has (`GET /api/v2/routing/queues`, every page), with each one's name
//! and service-level targets, and which of them the connector watches.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::api::{Api, ApiError};
use crate::{model::ServiceLevelTarget, server::domain::media_type};

/// Queues per page: the most the API gives.
const PAGE_SIZE: u32 = 100;
/// A guard against a server whose `pageCount` never ends.
const MAX_PAGES: u32 = 1_000;

/// One queue as gc-status keeps it from the API.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownQueue {
    pub id: String,
    pub name: String,
    /// The service-level target per media type (`voice`, `chat`, …, normalised as the
    /// observations name them).
    pub targets: BTreeMap<String, ServiceLevelTarget>,
}

impl KnownQueue {
    /// The queue's one target for the figures gc-status computes itself: voice's, else the
    /// first media type's.
    pub fn target(&self) -> Option<ServiceLevelTarget> {
        self.targets
            .get("voice")
            .or_else(|| self.targets.values().next())
            .copied()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueuePage {
    #[serde(default)]
    entities: Vec<QueueEntity>,
    page_count: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueueEntity {
    id: String,
    name: Option<String>,
    #[serde(default)]
    media_settings: BTreeMap<String, MediaSetting>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaSetting {
    service_level: Option<ServiceLevel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceLevel {
    /// A ratio (0.8 for 80 %).
    percentage: Option<f64>,
    duration_ms: Option<i64>,
}

/// Every queue the client may see, page by page until `pageCount`.
pub async fn list_queues(api: &Api) -> Result<Vec<KnownQueue>, ApiError> {
    let mut queues = Vec::new();
    let mut page = 1;
    loop {
        let path = format!("/api/v2/routing/queues?pageSize={PAGE_SIZE}&pageNumber={page}");
        let answer: QueuePage = api.get("routing/queues", &path).await?;
        let empty = answer.entities.is_empty();
        queues.extend(answer.entities.into_iter().map(known));
        let last = answer.page_count.unwrap_or(page);
        if page >= last || empty || page >= MAX_PAGES {
            return Ok(queues);
        }
        page += 1;
    }
}

fn known(entity: QueueEntity) -> KnownQueue {
    let targets = entity
        .media_settings
        .into_iter()
        .filter_map(|(media, setting)| {
            let level = setting.service_level?;
            let (ratio, ms) = (level.percentage?, level.duration_ms?);
            (ms > 0).then(|| {
                (
                    media_type(&media),
                    ServiceLevelTarget {
                        // Whole seconds, as gc-status's targets are kept; Genesys's targets
                        // are whole seconds in its admin UI.
                        seconds: (ms + 500) / 1000,
                        percent: (ratio * 100.0).clamp(0.0, 100.0),
                    },
                )
            })
        })
        .collect();
    KnownQueue {
        name: entity.name.unwrap_or_else(|| entity.id.clone()),
        id: entity.id,
        targets,
    }
}

/// The queues `patterns` select (ids or names, `prefix*` on either, names without regard to
/// case); every queue when there are no patterns.
pub fn watched(queues: Vec<KnownQueue>, patterns: &[String]) -> Vec<KnownQueue> {
    if patterns.is_empty() {
        return queues;
    }
    queues
        .into_iter()
        .filter(|q| patterns.iter().any(|p| selects(p, q)))
        .collect()
}

fn selects(pattern: &str, queue: &KnownQueue) -> bool {
    let name = queue.name.to_lowercase();
    match pattern.strip_suffix('*') {
        Some(prefix) => queue.id.starts_with(prefix) || name.starts_with(&prefix.to_lowercase()),
        None => queue.id == pattern || name == pattern.to_lowercase(),
    }
}

/// The patterns that selected no queue: a typo an operator should hear about.
pub fn unmatched<'a>(queues: &[KnownQueue], patterns: &'a [String]) -> Vec<&'a str> {
    patterns
        .iter()
        .filter(|p| !queues.iter().any(|q| selects(p, q)))
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(id: &str, name: &str) -> KnownQueue {
        KnownQueue {
            id: id.into(),
            name: name.into(),
            targets: BTreeMap::new(),
        }
    }

    #[test]
    fn queues_are_watched_by_id_name_or_prefix() {
        let all = vec![
            queue("q-1", "Sales EMEA"),
            queue("q-2", "Sales US"),
            queue("q-3", "Support"),
        ];
        let ids = |qs: Vec<KnownQueue>| qs.into_iter().map(|q| q.id).collect::<Vec<_>>();
        assert_eq!(ids(watched(all.clone(), &[])).len(), 3);
        assert_eq!(
            ids(watched(all.clone(), &["sales*".into()])),
            ["q-1", "q-2"]
        );
        assert_eq!(
            ids(watched(all.clone(), &["q-3".into(), "Sales US".into()])),
            ["q-2", "q-3"]
        );
        assert_eq!(
            unmatched(&all, &["Billing".into(), "q-1".into()]),
            ["Billing"]
        );
    }

    #[test]
    fn targets_are_read_per_media_type_from_the_queue_model() {
        let entity: QueueEntity = serde_json::from_str(
            r#"{"id":"q","name":"Sales","division":{"id":"d"},"mediaSettings":{
                "call":{"alertingTimeoutSeconds":8,"serviceLevel":{"percentage":0.8,"durationMs":20000}},
                "chat":{"serviceLevel":{"percentage":0.9,"durationMs":30000}},
                "email":{"serviceLevel":{"percentage":0.8,"durationMs":86400000}},
                "message":{}}}"#,
        )
        .expect("a queue");
        let q = known(entity);
        assert_eq!(q.targets.len(), 3);
        assert_eq!(q.targets["voice"].seconds, 20);
        assert_eq!(q.targets["chat"].percent, 90.0);
        assert_eq!(q.target().map(|t| t.seconds), Some(20));
    }
}
