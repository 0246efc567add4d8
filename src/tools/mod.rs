//! Offline tools: they read what nodes wrote and never run inside the event loop.

pub mod lamport;
