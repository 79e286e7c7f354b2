//! IPv4 addresses as numbers, for the `standard_ips` shorthand (a machine's BMP and board
//! IPs computed from a base address). BMP `host:port` addresses are the core's
//! ([`crate::core::config::split_address`]), since validated configurations carry them.

/// A dotted quad `a.b.c.d` as the 32-bit number `a·2²⁴ + b·2¹⁶ + c·2⁸ + d`.
pub(super) fn parse_quad(s: &str) -> Result<u32, String> {
    let bad =
        || format!("malformed IPv4 address {s:?} (expected four numbers 0-255 separated by dots)");
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return Err(bad());
    }
    let mut n = 0u32;
    for part in parts {
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let byte: u32 = part.parse().map_err(|_| bad())?;
        if byte > 255 {
            return Err(bad());
        }
        n = (n << 8) | byte;
    }
    Ok(n)
}

pub(super) fn format_quad(n: u32) -> String {
    let [a, b, c, d] = n.to_be_bytes();
    format!("{a}.{b}.{c}.{d}")
}
