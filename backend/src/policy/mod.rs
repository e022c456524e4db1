//! The policy engine (issue 6): per-gpair rules that decide which files go west on their own
//! and can explain every decision. `rules` (the rule language and the verdict on one file with
//! its reason), `glob` (path globs), `scan` (the parallel walk that judges a share), `run`
//! (`gpair policy run` and the triggers: periodic, watermarks, the east soft limit), and
//! `explain` (`gpair explain`, pins). Jobs the policy starts are background work: see
//! `tier::slots` and `tier::throttle` for how they yield to interactive work and keep to rate
//! limits.

pub mod explain;
pub mod glob;
pub mod rules;
pub mod run;
pub mod scan;
