//! The policy engine (issue 6, in progress): per-gpair rules that decide which files go west
//! on their own and can explain every decision. Here so far: the rule language and its
//! evaluation (path globs, the verdict on one file with its reason), `gpair policy set|show`,
//! `gpair explain` and pins. To come: the scanner, `policy run`, the triggers (periodic,
//! watermarks) and the rate limits.

pub mod explain;
pub mod glob;
pub mod rules;
pub mod run;
pub mod scan;
