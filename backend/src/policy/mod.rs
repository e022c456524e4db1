//! The policy engine (issue 6, in progress): per-gpair rules that decide which files go west
//! on their own and can explain every decision. This first part is the rule language and its
//! evaluation — path globs and the verdict on one file with its reason; the scanner, the
//! triggers, `gpair policy`, `gpair explain` and pins build on it.

pub mod glob;
pub mod rules;
