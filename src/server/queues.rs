//! Queue settings: each queue's name, service-level target and thresholds, from
//! `GC_STATUS_QUEUES_FILE` over the global defaults. The older names file
//! (`GC_STATUS_QUEUE_NAMES_FILE`, `{"queue-id": "Sales"}`) is the same file with names only.
//! Both are re-read on SIGHUP.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use anyhow::Context as _;
use serde::Deserialize;

use crate::model::{Limits, ServiceLevelTarget, Thresholds};

/// What the figures and the wallboard use for every queue.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueSettings {
    /// The service-level target of queues without their own.
    pub target: ServiceLevelTarget,
    /// Abandons sooner than this after queueing are short and left out (`None`: off).
    pub short_abandon_ms: Option<i64>,
    /// The thresholds of queues without their own.
    pub thresholds: Thresholds,
    /// Per-queue settings, by queue id.
    pub queues: HashMap<String, QueueSetting>,
    /// What Genesys Cloud says of each queue (the connector's queue list), by queue id: its
    /// name and target win over the payloads' and the file's; the file's thresholds stay.
    pub directory: HashMap<String, DirectoryEntry>,
}

/// A queue as Genesys Cloud's queue list names it.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectoryEntry {
    pub name: String,
    /// Its service-level target (voice's, else its first media type's).
    pub target: Option<ServiceLevelTarget>,
}

impl Default for QueueSettings {
    /// Genesys's default target (80 % within 20 s), no short abandons, no thresholds.
    fn default() -> Self {
        QueueSettings {
            target: ServiceLevelTarget {
                seconds: 20,
                percent: 80.0,
            },
            short_abandon_ms: None,
            thresholds: Thresholds::default(),
            queues: HashMap::new(),
            directory: HashMap::new(),
        }
    }
}

/// One queue's entry in the settings file: a name alone, or settings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Entry {
    Name(String),
    Settings(QueueSetting),
}

/// One queue's own settings; anything left out is the global one.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSetting {
    pub name: Option<String>,
    #[serde(default)]
    pub service_level: TargetOverride,
    #[serde(default)]
    pub thresholds: ThresholdOverride,
}

/// A queue's service-level target, field by field over the global one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetOverride {
    pub seconds: Option<i64>,
    pub percent: Option<f64>,
}

/// A queue's thresholds, level by level and limit by limit over the global ones.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdOverride {
    #[serde(default)]
    pub warning: LimitsOverride,
    #[serde(default)]
    pub critical: LimitsOverride,
}

/// Limits given for one queue; `service_level` in percent as in the environment settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsOverride {
    pub waiting: Option<i64>,
    pub longest_wait_secs: Option<i64>,
    pub service_level: Option<f64>,
}

impl LimitsOverride {
    fn over(&self, global: &Limits) -> Limits {
        Limits {
            waiting: self.waiting.or(global.waiting),
            longest_wait_secs: self.longest_wait_secs.or(global.longest_wait_secs),
            service_level: self.service_level.map(percent).or(global.service_level),
        }
    }

    fn is_empty(&self) -> bool {
        *self == LimitsOverride::default()
    }
}

/// A percentage setting as the 0..1 ratio the figures use.
pub fn percent(p: f64) -> f64 {
    (p / 100.0).clamp(0.0, 1.0)
}

impl QueueSettings {
    /// Reads the per-queue entries of `file` (a JSON object by queue id, each a name or
    /// `{"name", "service_level": {"seconds", "percent"}, "thresholds": {"warning": {…},
    /// "critical": {…}}}`). `setting` names the file's setting in errors.
    pub fn read_file(path: &Path, setting: &str) -> anyhow::Result<HashMap<String, QueueSetting>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {setting} {}", path.display()))?;
        let entries: BTreeMap<String, Entry> = serde_json::from_str(&text).with_context(|| {
            format!(
                "{setting} {} must be a JSON object by queue id, each a name or \
                 {{\"name\": …, \"service_level\": {{\"seconds\": 20, \"percent\": 80}}, \
                 \"thresholds\": {{\"warning\": {{…}}, \"critical\": {{…}}}}}}",
                path.display()
            )
        })?;
        let mut queues = HashMap::new();
        for (queue, entry) in entries {
            let setting_of = match entry {
                Entry::Name(name) => QueueSetting {
                    name: Some(name),
                    ..QueueSetting::default()
                },
                Entry::Settings(s) => s,
            };
            if let Some(seconds) = setting_of.service_level.seconds {
                anyhow::ensure!(
                    seconds > 0,
                    "{setting} {}: queue `{queue}`'s service_level.seconds must be above 0",
                    path.display()
                );
            }
            queues.insert(queue, setting_of);
        }
        Ok(queues)
    }

    /// The queue's configured name.
    pub fn name(&self, queue: &str) -> Option<&str> {
        self.queues.get(queue)?.name.as_deref()
    }

    /// The queue's name in Genesys Cloud's queue list (the connector's).
    pub fn directory_name(&self, queue: &str) -> Option<&str> {
        Some(self.directory.get(queue)?.name.as_str())
    }

    /// Genesys Cloud's target for the queue, when the connector read one.
    fn directory_target(&self, queue: &str) -> Option<ServiceLevelTarget> {
        self.directory.get(queue)?.target
    }

    /// The queue's service-level target: Genesys Cloud's, else the file's, else the global.
    pub fn target(&self, queue: &str) -> ServiceLevelTarget {
        if let Some(target) = self.directory_target(queue) {
            return target;
        }
        match self.queues.get(queue) {
            None => self.target,
            Some(q) => ServiceLevelTarget {
                seconds: q.service_level.seconds.unwrap_or(self.target.seconds),
                percent: q.service_level.percent.unwrap_or(self.target.percent),
            },
        }
    }

    /// Per-queue targets in milliseconds, as the statistics query takes them (`{"queue": ms}`).
    pub fn targets_json(&self) -> String {
        let mut targets: BTreeMap<&str, i64> = self
            .queues
            .iter()
            .filter_map(|(queue, q)| {
                q.service_level
                    .seconds
                    .map(|s| (queue.as_str(), s.saturating_mul(1000)))
            })
            .collect();
        for (queue, entry) in &self.directory {
            if let Some(target) = entry.target {
                targets.insert(queue.as_str(), target.seconds.saturating_mul(1000));
            }
        }
        serde_json::to_string(&targets).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Thresholds of the queues that have their own (the rest use [`Self::thresholds`]).
    pub fn queue_thresholds(&self) -> BTreeMap<String, Thresholds> {
        self.queues
            .iter()
            .filter(|(_, q)| !q.thresholds.warning.is_empty() || !q.thresholds.critical.is_empty())
            .map(|(queue, q)| {
                (
                    queue.clone(),
                    Thresholds {
                        warning: q.thresholds.warning.over(&self.thresholds.warning),
                        critical: q.thresholds.critical.over(&self.thresholds.critical),
                    },
                )
            })
            .collect()
    }
}

/// The settings in force, shared by the status reads and the pages, and where they are read
/// from again on SIGHUP.
#[derive(Clone, Debug)]
pub struct SharedSettings {
    current: Arc<RwLock<Arc<QueueSettings>>>,
    /// `(file, the setting that named it)`, when a file is configured.
    file: Option<(PathBuf, &'static str)>,
}

impl SharedSettings {
    pub fn new(settings: QueueSettings, file: Option<(PathBuf, &'static str)>) -> Self {
        SharedSettings {
            current: Arc::new(RwLock::new(Arc::new(settings))),
            file,
        }
    }

    /// The settings now.
    pub fn get(&self) -> Arc<QueueSettings> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the file again; on an error the settings in force stay and the error is returned.
    pub fn reload(&self) -> anyhow::Result<usize> {
        let Some((path, setting)) = &self.file else {
            return Ok(0);
        };
        let queues = QueueSettings::read_file(path, setting)?;
        let count = queues.len();
        let mut next = (*self.get()).clone();
        next.queues = queues;
        self.replace(next);
        Ok(count)
    }

    /// Replaces what Genesys Cloud's queue list says (names, targets); the file's settings stay.
    pub fn set_directory(&self, directory: HashMap<String, DirectoryEntry>) {
        let mut next = (*self.get()).clone();
        if next.directory == directory {
            return;
        }
        next.directory = directory;
        self.replace(next);
    }

    fn replace(&self, next: QueueSettings) {
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
    }

    /// Re-reads the file on every SIGHUP until `stop` (a supervised task: it ends only then).
    /// Without a file a SIGHUP is logged and ignored, so it never stops the process.
    pub async fn reload_on_hangup(self, stop: tokio_util::sync::CancellationToken) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => signal,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP: queue settings are not re-read");
                return stop.cancelled().await;
            }
        };
        loop {
            tokio::select! {
                received = hangup.recv() => if received.is_none() { return stop.cancelled().await },
                () = stop.cancelled() => return,
            }
            let Some((path, setting)) = &self.file else {
                tracing::info!(
                    "SIGHUP: no GC_STATUS_QUEUES_FILE (or GC_STATUS_QUEUE_NAMES_FILE) to read again"
                );
                continue;
            };
            match self.reload() {
                Ok(count) => tracing::info!(
                    file = %path.display(),
                    queues = count,
                    "SIGHUP: queue settings read again"
                ),
                Err(err) => tracing::error!(
                    "SIGHUP: {setting} not applied, the previous settings stay: {err:#}"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_file_gives_names_targets_and_thresholds_over_the_global_ones() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("queues.json");
        std::fs::write(
            &file,
            r#"{"q-sales": {"name": "Sales", "service_level": {"seconds": 30},
                            "thresholds": {"critical": {"waiting": 10, "service_level": 60}}},
                "q-old": "Support"}"#,
        )
        .expect("write");
        let settings = QueueSettings {
            target: ServiceLevelTarget {
                seconds: 20,
                percent: 80.0,
            },
            thresholds: Thresholds {
                warning: Limits {
                    waiting: Some(5),
                    ..Limits::default()
                },
                critical: Limits::default(),
            },
            queues: QueueSettings::read_file(&file, "GC_STATUS_QUEUES_FILE").expect("read"),
            ..QueueSettings::default()
        };
        assert_eq!(settings.name("q-sales"), Some("Sales"));
        assert_eq!(settings.name("q-old"), Some("Support"));
        assert_eq!(settings.target("q-sales").seconds, 30);
        assert_eq!(settings.target("q-sales").percent, 80.0);
        assert_eq!(settings.target("q-other").seconds, 20);
        assert_eq!(settings.targets_json(), r#"{"q-sales":30000}"#);
        let own = settings.queue_thresholds();
        assert_eq!(own.len(), 1);
        assert_eq!(own["q-sales"].warning.waiting, Some(5));
        assert_eq!(own["q-sales"].critical.waiting, Some(10));
        assert_eq!(own["q-sales"].critical.service_level, Some(0.6));

        std::fs::write(&file, r#"{"q": {"name": "X", "colour": "red"}}"#).expect("write");
        let err = QueueSettings::read_file(&file, "GC_STATUS_QUEUES_FILE").expect_err("unknown");
        assert!(
            format!("{err:#}").contains("GC_STATUS_QUEUES_FILE"),
            "{err:#}"
        );
    }
}
