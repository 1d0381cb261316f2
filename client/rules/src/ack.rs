//! What a request acknowledges (`Request.ack_below` and `Request.waiting`).
//!
//! The cluster keeps a session's answers until the client acknowledges
//! them, and at most a bounded number. Blocking acquires and campaigns may
//! run for hours, so they must not hold back the acknowledgement of the
//! session's other answers: they are listed instead (PROTOCOL.md,
//! "acknowledging around long waits").

use std::collections::BTreeMap;

/// `ack_below` and `waiting` for request `request_id`, given the session's
/// requests in flight (sent, not answered; `true` marks a long wait),
/// `request_id` included: every id below the smallest one in flight that
/// is not a long wait is acknowledged, except the long waits under it,
/// which are listed so the cluster keeps their answers for their retries.
///
/// Ids must be numbered and entered in `in_flight` in one step (under one
/// lock), so that no smaller id is ever sent after this request unlisted.
pub fn acknowledgement(in_flight: &BTreeMap<u64, bool>, request_id: u64) -> (u64, Vec<u64>) {
    let below = in_flight
        .iter()
        .find(|(_, is_wait)| !**is_wait)
        .map_or(request_id.saturating_add(1), |(id, _)| *id);
    let waiting = in_flight.range(..below).map(|(id, _)| *id).collect();
    (below, waiting)
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
