//! The forwarding queue's statements on SQLite.

use serde_json::{json, Value};
use sqlx::SqliteConnection;

use crate::server::store::deliveries::{shared_delivery_statements, DeliveryFailure, DeliverySql};

impl DeliverySql for SqliteConnection {
    async fn fail_deliveries(
        &mut self,
        failures: &[DeliveryFailure<'_>],
        token: i64,
        now: i64,
    ) -> sqlx::Result<Vec<(i64, String)>> {
        let rows: Vec<Value> = failures
            .iter()
            .map(
                |f| json!({ "s": f.seq, "e": f.error, "at": f.retry_at, "r": i64::from(f.refund) }),
            )
            .collect();
        sqlx::query_as(
            "UPDATE events
                SET forward_state = CASE WHEN j.value ->> 'at' IS NULL THEN 'dead'
                                         ELSE 'pending' END,
                    forward_due_at = j.value ->> 'at',
                    forward_attempts = forward_attempts - (j.value ->> 'r'),
                    forward_errors = json_insert(coalesce(forward_errors, '[]'), '$[#]',
                                                 json_object('at', ?1, 'error', j.value ->> 'e')),
                    forward_token = NULL
               FROM json_each(?2) AS j
              WHERE events.seq = j.value ->> 's' AND events.forward_state = 'sending'
                AND events.forward_token = ?3
          RETURNING seq, forward_state",
        )
        .bind(now)
        .bind(Value::Array(rows).to_string())
        .bind(token)
        .fetch_all(self)
        .await
    }

    shared_delivery_statements! {
        claim_deliveries: "UPDATE events
                SET forward_state = 'sending', forward_attempts = forward_attempts + 1,
                    forward_due_at = ?1, forward_token = ?2
              WHERE seq IN (SELECT seq FROM events
                             WHERE forward_state = ?3 AND forward_due_at <= ?4
                             ORDER BY forward_due_at, seq LIMIT ?5)
          RETURNING seq, id, event_type, payload, forward_attempts AS attempts, received_at",
        finish_deliveries: "UPDATE events
                SET forward_state = 'done', forwarded_at = ?1, forward_due_at = NULL,
                    forward_token = NULL
              WHERE seq IN (SELECT value FROM json_each(?2))
                AND forward_state = 'sending' AND forward_token = ?3",
        skip_locked: "",
    }
}
