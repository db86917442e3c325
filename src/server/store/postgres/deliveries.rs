//! The forwarding queue's statements on PostgreSQL: deliveries claimed with `FOR UPDATE SKIP
//! LOCKED`.

use sqlx::PgConnection;

use super::pg_text;
use crate::server::store::deliveries::{shared_delivery_statements, DeliveryFailure, DeliverySql};

impl DeliverySql for PgConnection {
    async fn fail_deliveries(
        &mut self,
        failures: &[DeliveryFailure<'_>],
        token: i64,
        now: i64,
    ) -> sqlx::Result<Vec<(i64, String)>> {
        let seqs: Vec<i64> = failures.iter().map(|f| f.seq).collect();
        let errors: Vec<String> = failures
            .iter()
            .map(|f| pg_text(f.error).into_owned())
            .collect();
        let retry_at: Vec<Option<i64>> = failures.iter().map(|f| f.retry_at).collect();
        let refunds: Vec<i64> = failures.iter().map(|f| i64::from(f.refund)).collect();
        sqlx::query_as(
            "UPDATE events
                SET forward_state = CASE WHEN f.at IS NULL THEN 'dead' ELSE 'pending' END,
                    forward_due_at = f.at,
                    forward_attempts = events.forward_attempts - f.refund,
                    forward_errors = coalesce(events.forward_errors, '[]'::jsonb)
                        || jsonb_build_array(jsonb_build_object('at', $1::int8,
                                                                'error', f.error)),
                    forward_token = NULL
               FROM UNNEST($2::int8[], $3::text[], $4::int8[], $5::int8[])
                    AS f(seq, error, at, refund)
              WHERE events.seq = f.seq AND events.forward_state = 'sending'
                AND events.forward_token = $6
          RETURNING events.seq, events.forward_state",
        )
        .bind(now)
        .bind(&seqs)
        .bind(&errors)
        .bind(&retry_at)
        .bind(&refunds)
        .bind(token)
        .fetch_all(self)
        .await
    }

    shared_delivery_statements! {
        claim_deliveries: "WITH due AS (
                 SELECT seq FROM events WHERE forward_state = $3 AND forward_due_at <= $4
                  ORDER BY forward_due_at, seq LIMIT $5
                  FOR UPDATE SKIP LOCKED)
             UPDATE events e
                SET forward_state = 'sending', forward_attempts = e.forward_attempts + 1,
                    forward_due_at = $1, forward_token = $2
               FROM due WHERE e.seq = due.seq
           RETURNING e.seq, e.id, e.event_type, e.payload, e.forward_attempts AS attempts,
                     e.received_at",
        finish_deliveries: "UPDATE events
                SET forward_state = 'done', forwarded_at = $1, forward_due_at = NULL,
                    forward_token = NULL
              WHERE seq = ANY($2) AND forward_state = 'sending' AND forward_token = $3",
        skip_locked: "FOR UPDATE SKIP LOCKED",
    }
}
