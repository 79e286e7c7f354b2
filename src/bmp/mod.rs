//! BMP control and simulation (placeholder).
