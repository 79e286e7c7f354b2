//! The server loop (placeholder).
