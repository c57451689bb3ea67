//! Thresholds before a verdict changes: `rise` passed checks in a row to say
//! passing, `fall` failed checks in a row to say critical, so one lost packet
//! or one slow answer does not flap an instance.

use crate::registry::InstanceHealth;

/// The checks of one registration since its verdict last changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Streak {
    /// The verdict stored (`None`: none yet for this registration).
    stated: Option<InstanceHealth>,
    passed: u32,
    failed: u32,
}

impl Streak {
    /// A streak starting from the stored verdict `stated`.
    pub(crate) fn from(stated: Option<InstanceHealth>) -> Self {
        Streak {
            stated,
            ..Streak::default()
        }
    }

    /// Count one check; the verdict to store, if the thresholds call for a
    /// change (it stays called for until [`Streak::stored`] is told).
    pub(crate) fn observe(&mut self, passed: bool, rise: u32, fall: u32) -> Option<InstanceHealth> {
        if passed {
            self.passed = self.passed.saturating_add(1);
            self.failed = 0;
        } else {
            self.failed = self.failed.saturating_add(1);
            self.passed = 0;
        }
        let want = if passed && self.passed >= rise {
            InstanceHealth::Passing
        } else if !passed && self.failed >= fall {
            InstanceHealth::Critical
        } else {
            return None;
        };
        (self.stated != Some(want)).then_some(want)
    }

    /// The verdict `health` is stored now.
    pub(crate) fn stored(&mut self, health: InstanceHealth) {
        self.stated = Some(health);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceHealth::{Critical, Passing};

    fn run(streak: &mut Streak, checks: &str) -> Vec<Option<InstanceHealth>> {
        checks
            .chars()
            .map(|c| {
                let change = streak.observe(c == '+', 2, 3);
                if let Some(h) = change {
                    streak.stored(h);
                }
                change
            })
            .collect()
    }

    #[test]
    fn a_verdict_changes_only_after_its_threshold_in_a_row() {
        let mut s = Streak::from(None);
        assert_eq!(run(&mut s, "+"), [None]);
        assert_eq!(run(&mut s, "+"), [Some(Passing)]);
        // Two failures, a pass, two failures: never three in a row.
        assert_eq!(run(&mut s, "--+--"), [None; 5]);
        assert_eq!(run(&mut s, "-"), [Some(Critical)]);
        assert_eq!(
            run(&mut s, "--"),
            [None, None],
            "critical stays, no rewrite"
        );
        assert_eq!(run(&mut s, "+-+"), [None; 3]);
        assert_eq!(
            run(&mut s, "++"),
            [Some(Passing), None],
            "two passes in a row"
        );
    }

    #[test]
    fn a_change_not_stored_is_called_for_again() {
        let mut s = Streak::from(Some(Passing));
        assert_eq!(s.observe(false, 1, 1), Some(Critical));
        assert_eq!(s.observe(false, 1, 1), Some(Critical), "not stored yet");
        s.stored(Critical);
        assert_eq!(s.observe(false, 1, 1), None);
        assert_eq!(s.stated, Some(Critical));
    }
}
