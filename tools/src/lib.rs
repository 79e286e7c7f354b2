//! Shared helpers for the spalloc tools.
