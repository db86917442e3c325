//! Where a conversation queued, asked of Genesys when no stored event says: a state change
//! without a queue (a data action that sends only the conversation) is looked up with
//! `GET /api/v2/analytics/conversations/{id}/details` inside the retry worker instead of
//! being dead-lettered. Analytics can lag a few seconds behind a new conversation, so a 404
//! is "not yet": the worker retries with its backoff.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{
    api::{Api, ApiError},
    feed::{self, ConversationDetails},
};
use crate::server::{domain::QueueOfConversation, worker::ConversationLookup};

/// The connector's API as the workers' lookup.
pub struct DetailsLookup(pub Arc<Api>);

impl ConversationLookup for DetailsLookup {
    fn queue_of<'a>(
        &'a self,
        conversation_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<QueueOfConversation>, String>> {
        Box::pin(async move {
            let id = percent_encoding::utf8_percent_encode(
                conversation_id,
                percent_encoding::NON_ALPHANUMERIC,
            );
            let path = format!("/api/v2/analytics/conversations/{id}/details");
            match self
                .0
                .get::<ConversationDetails>("conversation details", &path)
                .await
            {
                Ok(details) => Ok(feed::queue_of(details)),
                Err(ApiError::NotFound) => Ok(None),
                Err(err) => Err(err.to_string()),
            }
        })
    }
}
