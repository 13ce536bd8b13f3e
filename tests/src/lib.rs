//! Cross-crate and cluster tests live in `tests/tests/`.
