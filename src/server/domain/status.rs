//! Every state an event, a delivery and a dead letter can be in, as the store writes them.

use std::fmt;

/// Declares a state enum stored as lowercase text: `as_str`, `FromStr`, `Display`, serde and
/// comparison with the text (`status == "done"`).
macro_rules! stored_state {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in the order of the lifecycle.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text the store keeps.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownState;
            fn from_str(text: &str) -> Result<Self, UnknownState> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownState {
                        what: stringify!($name),
                        text: text.to_owned(),
                        known: &[$($text),+],
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, text: &&str) -> bool {
                self.as_str() == *text
            }
        }
    };
}

stored_state! {
    /// Where an event is in its processing.
    EventStatus {
        /// Waiting for its first or next attempt.
        Pending = "pending",
        /// Claimed by a worker, leased until its `next_attempt_at`.
        Processing = "processing",
        /// Processed: its effect is in the statistics.
        Done = "done",
        /// Out of attempts, or not processable: a dead letter (or, once discarded, a tombstone).
        Dead = "dead",
    }
}

stored_state! {
    /// Where a done event's delivery to the sink is.
    ForwardState {
        /// Waiting for its first or next attempt.
        Pending = "pending",
        /// Being sent, under a lease.
        Sending = "sending",
        /// The sink accepted it.
        Done = "done",
        /// Out of attempts: a dead letter of the sink stage.
        Dead = "dead",
    }
}

stored_state! {
    /// Which step a dead letter failed at.
    Stage {
        /// Processing the payload.
        Payload = "payload",
        /// Forwarding it to the sink.
        Sink = "sink",
    }
}

/// Text that names no known state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a {what}: use one of {}", known.join(", "))]
pub struct UnknownState {
    what: &'static str,
    text: String,
    known: &'static [&'static str],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_text() {
        for s in EventStatus::ALL {
            assert_eq!(s.as_str().parse::<EventStatus>(), Ok(*s));
        }
        for s in ForwardState::ALL {
            assert_eq!(s.as_str().parse::<ForwardState>(), Ok(*s));
        }
        for s in Stage::ALL {
            assert_eq!(s.to_string().parse::<Stage>(), Ok(*s));
        }
        let err = "sunk".parse::<Stage>().unwrap_err().to_string();
        assert_eq!(err, "`sunk` is not a Stage: use one of payload, sink");
    }
}
