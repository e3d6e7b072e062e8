//! History visibility (spec: client-server API, "Room History Visibility", server behaviour):
//! which of a room's events a user, or another server, may see.
//!
//! The rule looks at the room's state *at each event*: the `m.room.history_visibility` in
//! force and the viewer's membership. Both change only at the room's history-visibility events
//! and the viewer's own member events, so a viewer's view of a room is a set of position ranges
//! that can change only at those events. [`visible_to_user`] computes that set from the two
//! lists of changes (read by the services in one query each), so deciding a page of events is
//! a binary search per event rather than a state lookup per event.
//!
//! Positions are the room's order of events (the store's stream positions). No I/O here.

/// The `history_visibility` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryVisibility {
    /// Anyone may read events sent while this is in force.
    WorldReadable,
    /// Members may read everything, also from before they joined.
    Shared,
    /// Members may read from their invite on.
    Invited,
    /// Members may read from their join on.
    Joined,
}

impl HistoryVisibility {
    /// Parses a content value; absent or unknown values are `shared` (spec: "if no
    /// `history_visibility` is set, or if the value is not understood, the visibility is
    /// assumed to be `shared`").
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("world_readable") => Self::WorldReadable,
            Some("invited") => Self::Invited,
            Some("joined") => Self::Joined,
            _ => Self::Shared,
        }
    }
}

/// A membership as far as visibility cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// `join`.
    Join,
    /// `invite`.
    Invite,
    /// Anything else (`leave`, `ban`, `knock`, or never a member).
    Other,
}

impl Membership {
    /// Parses a member event's `membership`.
    pub fn parse(value: &str) -> Self {
        match value {
            "join" => Self::Join,
            "invite" => Self::Invite,
            _ => Self::Other,
        }
    }
}

/// The positions of a room's events a viewer may see: sorted, disjoint, non-adjacent
/// inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visible {
    ranges: Vec<(i64, i64)>,
}

impl Visible {
    /// Nothing visible.
    pub fn nothing() -> Self {
        Self::default()
    }

    /// Everything visible.
    pub fn everything() -> Self {
        Self {
            ranges: vec![(i64::MIN, i64::MAX)],
        }
    }

    /// The visible ranges, inclusive, in order.
    pub fn ranges(&self) -> &[(i64, i64)] {
        &self.ranges
    }

    /// Whether the event at `pos` is visible.
    pub fn allows(&self, pos: i64) -> bool {
        let i = self.ranges.partition_point(|&(_, hi)| hi < pos);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= pos)
    }

    /// The greatest visible position at or before `pos`, so a scan backwards can skip what the
    /// viewer may not see.
    pub fn last_at_or_before(&self, pos: i64) -> Option<i64> {
        let i = self.ranges.partition_point(|&(lo, _)| lo <= pos);
        i.checked_sub(1).map(|i| self.ranges[i].1.min(pos))
    }

    /// The smallest visible position at or after `pos`, for scans forwards.
    pub fn first_at_or_after(&self, pos: i64) -> Option<i64> {
        let i = self.ranges.partition_point(|&(_, hi)| hi < pos);
        self.ranges.get(i).map(|&(lo, _)| lo.max(pos))
    }

    /// Whether nothing at all is visible.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Appends a range after the existing ones, merging it when adjacent.
    fn push(&mut self, lo: i64, hi: i64) {
        if lo > hi {
            return;
        }
        match self.ranges.last_mut() {
            Some(last) if last.1.checked_add(1).is_none_or(|next| next >= lo) => {
                last.1 = last.1.max(hi)
            }
            _ => self.ranges.push((lo, hi)),
        }
    }

    /// Everything either may see.
    pub fn union(&self, other: &Visible) -> Visible {
        let mut all: Vec<(i64, i64)> = self.ranges.iter().chain(&other.ranges).copied().collect();
        all.sort_unstable();
        let mut out = Visible::nothing();
        for (lo, hi) in all {
            out.push(lo, hi);
        }
        out
    }
}

/// The value in force at `pos` of a sorted change list: including a change at `pos` itself
/// (`after`) or not (before).
fn at<T: Copy>(changes: &[(i64, T)], pos: i64, after: bool, default: T) -> T {
    let i = changes.partition_point(|&(p, _)| if after { p <= pos } else { p < pos });
    i.checked_sub(1).map_or(default, |i| changes[i].1)
}

/// The spec's rule for one event, given the state at it.
fn allowed(history: HistoryVisibility, membership: Membership, joined_later: bool) -> bool {
    history == HistoryVisibility::WorldReadable
        || membership == Membership::Join
        || (history == HistoryVisibility::Shared && joined_later)
        || (history == HistoryVisibility::Invited && membership == Membership::Invite)
}

/// What one user may see of a room, from the room's history-visibility changes and the user's
/// own membership changes, each `(position, value)` sorted by position.
///
/// Per event at position `p` (spec, server behaviour of history visibility):
/// 1. `world_readable` at the event: allow;
/// 2. the user's membership at the event is `join`: allow;
/// 3. `shared` and the user joined at any point after the event: allow;
/// 4. `invited` and the user's membership at the event is `invite`: allow;
/// 5. otherwise deny.
///
/// The state "at" a history-visibility event or the user's own member event is taken both
/// before and after it, and either allowing is enough (the spec's rule for those two kinds);
/// for every other event the two are the same.
pub fn visible_to_user(
    history: &[(i64, HistoryVisibility)],
    memberships: &[(i64, Membership)],
) -> Visible {
    let mut points: Vec<i64> = history
        .iter()
        .map(|c| c.0)
        .chain(memberships.iter().map(|c| c.0))
        .collect();
    points.sort_unstable();
    points.dedup();
    let last_join = memberships
        .iter()
        .filter(|c| c.1 == Membership::Join)
        .map(|c| c.0)
        .max();
    let joined_after = |pos: i64| last_join.is_some_and(|j| j > pos);
    let state = |pos: i64, after: bool| {
        (
            at(history, pos, after, HistoryVisibility::Shared),
            at(memberships, pos, after, Membership::Other),
        )
    };
    let mut out = Visible::nothing();
    let mut lo = i64::MIN;
    for &p in &points {
        // The stretch before `p` (no change inside it): the state just before `p`.
        if lo < p {
            let (history, membership) = state(p, false);
            if allowed(history, membership, joined_after(p - 1)) {
                out.push(lo, p - 1);
            }
        }
        // The changing event itself: before or after.
        let before = state(p, false);
        let after = state(p, true);
        if allowed(before.0, before.1, joined_after(p))
            || allowed(after.0, after.1, joined_after(p))
        {
            out.push(p, p);
        }
        match p.checked_add(1) {
            Some(next) => lo = next,
            None => return out,
        }
    }
    let (history, membership) = state(i64::MAX, true);
    if allowed(history, membership, false) {
        out.push(lo, i64::MAX);
    }
    out
}

/// What another server may see of a room: whatever any of its users may see (spec, server
/// behaviour of history visibility applied to each of the server's users). `members` are the
/// member events of that server's users, `(position, user, membership)` sorted by position.
pub fn visible_to_server(
    history: &[(i64, HistoryVisibility)],
    members: &[(i64, String, Membership)],
) -> Visible {
    let mut users: Vec<&str> = members.iter().map(|m| m.1.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    // World-readable stretches are visible even to a server with no member at all.
    let mut out = visible_to_user(history, &[]);
    for user in users {
        let own: Vec<(i64, Membership)> = members
            .iter()
            .filter(|m| m.1 == user)
            .map(|m| (m.0, m.2))
            .collect();
        out = out.union(&visible_to_user(history, &own));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::HistoryVisibility::{Invited, Joined, Shared, WorldReadable};
    use super::Membership::{Invite, Join, Other};
    use super::*;

    /// Which of positions 1..=20 are visible.
    fn seen(v: &Visible) -> Vec<i64> {
        (1..=20).filter(|p| v.allows(*p)).collect()
    }

    #[test]
    fn joined_sees_from_join_until_leave() {
        // Position 1 predates any setting (shared by default) and the change at 2 is seen
        // with the setting before it: both visible to someone who joined later.
        let v = visible_to_user(&[(2, Joined)], &[(5, Join), (9, Other)]);
        assert_eq!(seen(&v), vec![1, 2, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn shared_sees_earlier_history_but_not_after_leaving() {
        let v = visible_to_user(&[(2, Shared)], &[(5, Join), (9, Other)]);
        assert_eq!(seen(&v), (1..=9).collect::<Vec<_>>());
        // Rejoining makes the gap visible again, since they joined after it.
        let v = visible_to_user(&[(2, Shared)], &[(5, Join), (9, Other), (15, Join)]);
        assert_eq!(seen(&v), (1..=20).collect::<Vec<_>>());
    }

    #[test]
    fn shared_needs_a_join() {
        let v = visible_to_user(&[(2, Shared)], &[(5, Invite)]);
        assert!(seen(&v).is_empty());
        assert!(visible_to_user(&[], &[]).is_empty());
    }

    #[test]
    fn invited_counts_from_the_invite() {
        let v = visible_to_user(&[(2, Invited)], &[(5, Invite), (8, Join)]);
        assert_eq!(seen(&v), [vec![1, 2], (5..=20).collect()].concat());
        let v = visible_to_user(&[(2, Joined)], &[(5, Invite), (8, Join)]);
        assert_eq!(seen(&v), [vec![1, 2], (8..=20).collect()].concat());
    }

    #[test]
    fn world_readable_needs_no_membership() {
        let v = visible_to_user(&[(2, WorldReadable), (10, Joined)], &[]);
        assert_eq!(seen(&v), (2..=10).collect::<Vec<_>>());
    }

    #[test]
    fn a_change_applies_from_its_event_on() {
        // shared until 10, joined from there; the user joins at 15.
        let v = visible_to_user(&[(1, Shared), (10, Joined)], &[(15, Join)]);
        assert_eq!(
            seen(&v),
            [(1..=10).collect::<Vec<_>>(), (15..=20).collect()].concat()
        );
        // joined until 10, shared from there.
        let v = visible_to_user(&[(1, Joined), (10, Shared)], &[(15, Join)]);
        assert_eq!(seen(&v), [vec![1], (10..=20).collect()].concat());
    }

    #[test]
    fn own_member_events_count_before_or_after() {
        // The leave at 9 is visible (membership before it was join); the kick-back invite at
        // 12 is not in a joined room while left.
        let v = visible_to_user(&[(1, Joined)], &[(5, Join), (9, Other), (12, Invite)]);
        assert!(v.allows(9));
        assert!(!v.allows(12));
    }

    #[test]
    fn scans_skip_invisible_stretches() {
        let v = visible_to_user(&[(1, Joined)], &[(5, Join), (9, Other), (15, Join)]);
        assert_eq!(v.last_at_or_before(13), Some(9));
        assert_eq!(v.last_at_or_before(4), Some(1));
        assert_eq!(v.first_at_or_after(10), Some(15));
        assert_eq!(v.first_at_or_after(i64::MAX), Some(i64::MAX));
    }

    #[test]
    fn a_server_sees_what_any_of_its_users_may() {
        let members = vec![
            (5, "@a:s".to_owned(), Join),
            (8, "@a:s".to_owned(), Other),
            (12, "@b:s".to_owned(), Join),
        ];
        let v = visible_to_server(&[(1, Joined)], &members);
        assert_eq!(
            seen(&v),
            [vec![1], (5..=8).collect(), (12..=20).collect()].concat()
        );
        let v = visible_to_server(&[(1, Shared)], &members);
        assert_eq!(seen(&v), (1..=20).collect::<Vec<_>>());
        assert!(visible_to_server(&[(1, Joined)], &[]).is_empty());
    }
}
