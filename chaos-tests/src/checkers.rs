//! The checkers: one property of a history per module.
