#![no_std]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod id;
pub mod ring;
pub mod version;

pub use id::NodeId;
