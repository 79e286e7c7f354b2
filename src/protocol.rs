//! The JSON-line protocol (placeholder).
