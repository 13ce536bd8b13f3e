//! Filled by the Python issue: pyo3 over ringkv-core.
