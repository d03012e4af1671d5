//! The report's four TCB versions and the rules between them:
//!
//! - **order**: `reported ≤ committed ≤ current`, component by component.
//!   The firmware commits only a TCB it runs (committed ≤ current) and the
//!   host may only report one it has committed (reported ≤ committed);
//!   a report that breaks either is not what genuine firmware signs, or
//!   claims a TCB the platform can still roll back from;
//! - **minimums**: the policy's `min_tcb` applies to the reported TCB (the
//!   one the VCEK is derived from), and `min_committed_tcb`,
//!   `min_current_tcb` and `min_launch_tcb` to the others: a guest launched
//!   on old firmware (`launch_tcb`) carries its state from then.
//!
//! Each violation is its own typed reason naming the TCB and component.

use super::report::{SnpReport, TcbVersion};
use crate::policy::MinTcb;
use crate::verdict::{ReasonKind, Verdict};

/// Which TCB of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcbKind {
    Reported,
    Committed,
    Current,
    Launch,
}

impl TcbKind {
    fn field(self) -> &'static str {
        match self {
            TcbKind::Reported => "reported_tcb",
            TcbKind::Committed => "committed_tcb",
            TcbKind::Current => "current_tcb",
            TcbKind::Launch => "launch_tcb",
        }
    }
}

/// The minimum for each of the report's TCBs (unset: not checked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcbMinimums {
    pub reported: MinTcb,
    pub committed: MinTcb,
    pub current: MinTcb,
    pub launch: MinTcb,
}

fn tcb(report: &SnpReport, kind: TcbKind, turin: bool) -> TcbVersion {
    let raw = report.raw();
    let value = match kind {
        TcbKind::Reported => raw.reported_tcb.get(),
        TcbKind::Committed => raw.committed_tcb.get(),
        TcbKind::Current => raw.current_tcb.get(),
        TcbKind::Launch => raw.launch_tcb.get(),
    };
    TcbVersion::decode(value, turin)
}

/// The components by name, in one order for TCBs and minimums alike
/// (`fmc` is `None` before Turin).
const NAMES: [&str; 5] = ["fmc", "bl", "tee", "snp", "ucode"];

fn components(t: &TcbVersion) -> [Option<u8>; 5] {
    [t.fmc, Some(t.bl), Some(t.tee), Some(t.snp), Some(t.ucode)]
}

fn minimums(m: &MinTcb) -> [Option<u8>; 5] {
    [m.fmc, m.bl, m.tee, m.snp, m.ucode]
}

/// Applies the order and the minimums; returns whether every minimum held
/// (the TCB status is out of date otherwise).
pub(crate) fn check_tcbs(
    report: &SnpReport,
    turin: bool,
    minimums_of: &TcbMinimums,
    v: &mut Verdict,
) -> bool {
    for (lower, upper) in [
        (TcbKind::Reported, TcbKind::Committed),
        (TcbKind::Committed, TcbKind::Current),
    ] {
        let lo = components(&tcb(report, lower, turin));
        let hi = components(&tcb(report, upper, turin));
        for ((name, l), h) in NAMES.iter().zip(lo).zip(hi) {
            if let (Some(l), Some(h)) = (l, h)
                && l > h
            {
                v.reject(
                    ReasonKind::TcbOrderViolated,
                    format!(
                        "{}.{name} = {l} is above {}.{name} = {h} (reported ≤ committed ≤ current)",
                        lower.field(),
                        upper.field()
                    ),
                );
            }
        }
    }
    let mut met = true;
    for (kind, min) in [
        (TcbKind::Reported, minimums_of.reported),
        (TcbKind::Committed, minimums_of.committed),
        (TcbKind::Current, minimums_of.current),
        (TcbKind::Launch, minimums_of.launch),
    ] {
        let have = components(&tcb(report, kind, turin));
        for ((name, want), got) in NAMES.iter().zip(minimums(&min)).zip(have) {
            if let Some(want) = want
                && got.is_none_or(|g| g < want)
            {
                met = false;
                let reason = if kind == TcbKind::Launch {
                    ReasonKind::LaunchTcbBelowMinimum
                } else {
                    ReasonKind::TcbBelowMinimum
                };
                v.reject(
                    reason,
                    format!(
                        "{}.{name} = {} is below the minimum {want}",
                        kind.field(),
                        got.map_or("absent".into(), |g| g.to_string())
                    ),
                );
            }
        }
    }
    met
}
