//! Contexts and version vectors: [`ringkv_core::version::Context`] and
//! [`ringkv_core::version::VersionVector`] with the core's causal comparison.

use std::collections::BTreeMap;

use pyo3::prelude::*;
use ringkv_core::version::{ActorId, Causality, ClockEntry, Context, VersionVector};

use crate::errors;

/// The name Python sees for a causal relation.
pub fn causality_name(causality: Causality) -> &'static str {
    match causality {
        Causality::Before => "before",
        Causality::After => "after",
        Causality::Equal => "equal",
        Causality::Concurrent => "concurrent",
    }
}

/// Builds a version vector from `(actor, counter)` pairs (counter 0 means no entry). The core
/// offers no constructor from entries, so this goes through the vector's own serde form (a map
/// from actor to entry), which checks what the core checks for any vector it reads.
pub fn vector_from_entries(entries: BTreeMap<String, u64>) -> PyResult<VersionVector> {
    let map: BTreeMap<ActorId, ClockEntry> = entries
        .into_iter()
        .filter(|(_, counter)| *counter > 0)
        .map(|(actor, counter)| {
            (
                ActorId::new(actor),
                ClockEntry {
                    counter,
                    timestamp: 0,
                },
            )
        })
        .collect();
    let bytes = postcard::to_allocvec(&map)
        .map_err(|e| errors::invalid(format!("cannot encode the clock: {e}")))?;
    postcard::from_bytes::<VersionVector>(&bytes)
        .map_err(|e| errors::invalid(format!("invalid clock: {e}")))
}

/// A version vector: per actor (a node incarnation such as `n1.0.0`), the highest counter seen.
#[pyclass(module = "ringkv._native", name = "VersionVector", frozen)]
#[derive(Clone)]
pub struct PyVersionVector {
    pub(crate) vector: VersionVector,
}

#[pymethods]
impl PyVersionVector {
    /// A vector with these counters (`{actor: counter}`; a counter of 0 is no entry).
    #[new]
    #[pyo3(signature = (entries = BTreeMap::new()))]
    fn new(entries: BTreeMap<String, u64>) -> PyResult<Self> {
        Ok(PyVersionVector {
            vector: vector_from_entries(entries)?,
        })
    }

    /// `(actor, counter)` pairs in actor order.
    fn entries(&self) -> Vec<(String, u64)> {
        self.vector
            .iter()
            .map(|(actor, entry)| (actor.as_str().to_string(), entry.counter))
            .collect()
    }

    /// The counter of `actor` (0 when absent).
    fn get(&self, actor: &str) -> u64 {
        self.vector.get(&ActorId::new(actor))
    }

    /// How this vector relates to `other`: `before`, `after`, `equal` or `concurrent`.
    fn compare(&self, other: &PyVersionVector) -> &'static str {
        causality_name(self.vector.compare(&other.vector))
    }

    /// Whether this vector has seen everything `other` has.
    fn descends(&self, other: &PyVersionVector) -> bool {
        self.vector.descends(&other.vector)
    }

    /// Whether the write named `(actor, counter)` has been seen.
    fn covers(&self, actor: &str, counter: u64) -> bool {
        self.vector.covers(&ringkv_core::version::Dot {
            actor: ActorId::new(actor),
            counter,
        })
    }

    /// The pointwise maximum of the two.
    fn merge(&self, other: &PyVersionVector) -> PyVersionVector {
        let mut vector = self.vector.clone();
        vector.merge(&other.vector);
        PyVersionVector { vector }
    }

    fn __len__(&self) -> usize {
        self.vector.len()
    }
}

/// The opaque causal context of a key: what a get returns and a put hands back.
#[pyclass(module = "ringkv._native", name = "Context", frozen)]
#[derive(Clone)]
pub struct PyContext {
    pub(crate) context: Context,
}

impl PyContext {
    pub fn wrap(context: Context) -> PyContext {
        PyContext { context }
    }
}

#[pymethods]
impl PyContext {
    /// A context carrying `clock` (the empty context without one).
    #[new]
    #[pyo3(signature = (clock = None))]
    fn new(clock: Option<PyRef<'_, PyVersionVector>>) -> Self {
        PyContext {
            context: clock
                .map(|c| Context::from_clock(c.vector.clone()))
                .unwrap_or_default(),
        }
    }

    /// Decodes the HTTP form (the `X-Ringkv-Context` header).
    #[staticmethod]
    fn from_base64(text: &str) -> PyResult<PyContext> {
        Context::from_base64(text.trim())
            .map(PyContext::wrap)
            .map_err(|e| errors::context(format!("invalid context: {e}")))
    }

    /// The HTTP form: unpadded URL-safe base64 with a checksum.
    fn to_base64(&self) -> String {
        self.context.to_base64()
    }

    /// The version vector the context carries.
    #[getter]
    fn clock(&self) -> PyVersionVector {
        PyVersionVector {
            vector: self.context.clock().clone(),
        }
    }

    /// Whether the context has seen nothing.
    #[getter]
    fn is_empty(&self) -> bool {
        self.context.is_empty()
    }

    /// How this context's history relates to `other`'s.
    fn compare(&self, other: &PyContext) -> &'static str {
        causality_name(self.context.compare(&other.context))
    }
}
