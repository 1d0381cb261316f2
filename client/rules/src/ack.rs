//! What a request acknowledges (`Request.ack_below` and `Request.waiting`).
//!
//! The cluster keeps a session's answers until the client acknowledges
//! them, and at most a bounded number. Blocking acquires and campaigns may
//! run for hours, so they must not hold back the acknowledgement of the
//! session's other answers: they are listed instead (PROTOCOL.md,
//! "acknowledging around long waits").

use std::collections::BTreeMap;

/// How many times a client sends a request again under a new request id
/// when the cluster refuses it as acknowledged (`REQUEST_ID_ACKNOWLEDGED`)
/// before the client had its answer.
///
/// Such a request was never applied, and never will be under its id: the
/// acknowledgement rule never lets the floor pass a request in flight
/// unanswered (a long wait is listed, and the floor stops at the oldest
/// other one), and an answer recorded for it stays recorded until the
/// client acknowledges it. What fences it is a node's withdrawal of a
/// later wait of the session that timed out (`Abandon`), which moves the
/// floor past everything below the withdrawn request, applied or not,
/// while this one was still on its way. Sent again under a new id, it is
/// applied exactly once. More than one renumbering means another
/// withdrawal overtook it again; past this many the client gives up with
/// the error.
pub const MAX_RENUMBERED_SENDS: u32 = 2;

/// `ack_below` and `waiting` for request `request_id`, given the session's
/// requests in flight (sent, not answered; `true` marks a long wait),
/// `request_id` included: every id below the smallest one in flight that
/// is not a long wait is acknowledged, except the long waits under it,
/// which are listed so the cluster keeps their answers for their retries.
///
/// Ids must be numbered and entered in `in_flight` in one step (under one
/// lock), so that no smaller id is ever sent after this request unlisted.
pub fn acknowledgement(in_flight: &BTreeMap<u64, bool>, request_id: u64) -> (u64, Vec<u64>) {
    #[cfg(feature = "canary")]
    if canary::long_waits_hold_the_floor() {
        // The rule before long waits were listed: the floor stops at the
        // oldest request in flight, whatever it is.
        let below = in_flight
            .keys()
            .next()
            .map_or(request_id.saturating_add(1), |id| *id);
        return (below, Vec::new());
    }
    let below = in_flight
        .iter()
        .find(|(_, is_wait)| !**is_wait)
        .map_or(request_id.saturating_add(1), |(id, _)| *id);
    let waiting = in_flight.range(..below).map(|(id, _)| *id).collect();
    (below, waiting)
}

/// Test-only switch that breaks the rule above, so the simulator's canary
/// can show that its checks catch it. Never enabled in production.
#[cfg(feature = "canary")]
pub mod canary {
    use std::cell::Cell;

    thread_local! {
        static LONG_WAITS_HOLD_THE_FLOOR: Cell<bool> = const { Cell::new(false) };
    }

    /// Makes [`acknowledgement`](super::acknowledgement) on this thread
    /// stop the floor at the oldest request in flight, long waits
    /// included, and list none: a long wait then holds back the
    /// acknowledgement of every later answer of its session.
    pub fn set_long_waits_hold_the_floor(on: bool) {
        LONG_WAITS_HOLD_THE_FLOOR.with(|c| c.set(on));
    }

    /// Whether the canary is on for this thread.
    pub fn long_waits_hold_the_floor() -> bool {
        LONG_WAITS_HOLD_THE_FLOOR.with(Cell::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_stops_at_the_oldest_unanswered_request_and_skips_long_waits() {
        let in_flight = BTreeMap::from([(3, true), (5, false), (6, true), (8, false)]);
        assert_eq!(acknowledgement(&in_flight, 8), (5, vec![3]));
        let only_waits = BTreeMap::from([(3, true), (9, true)]);
        assert_eq!(acknowledgement(&only_waits, 9), (10, vec![3, 9]));
        let none_waiting = BTreeMap::from([(4, false)]);
        assert_eq!(acknowledgement(&none_waiting, 4), (4, vec![]));
    }
}
