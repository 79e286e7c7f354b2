//! BMP addresses: `host`, `host:port`, `[v6]` or `[v6]:port`, split into host and port (the
//! port defaulting to [`DEFAULT_BMP_PORT`]) and checked. Validation uses it on the file's
//! addresses; the BMP threads on the validated ones ([`super::BmpConfig::host`]).

/// The port a BMP listens on when its address names none (SCP over UDP).
pub const DEFAULT_BMP_PORT: u16 = 17893;

/// Splits a BMP address, `host`, `host:port`, `[v6]` or `[v6]:port` (a bare IPv6 literal
/// with several colons is taken as a host), into host and port, the port defaulting to
/// [`DEFAULT_BMP_PORT`]. The error says what is wrong.
pub fn split_address(address: &str) -> Result<(&str, u16), String> {
    fn port(text: &str) -> Result<u16, String> {
        match text.parse::<u16>() {
            Ok(0) => Err("port 0 is not a valid BMP port (1-65535)".to_string()),
            Ok(p) if text.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
            _ => Err(format!("invalid port {text:?} (expected 1-65535)")),
        }
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{address:?}: missing ']' after an IPv6 address"))?;
        match after {
            "" => (host, DEFAULT_BMP_PORT),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, port(p)?),
                None => return Err(format!("{address:?}: expected ':port' after ']'")),
            },
        }
    } else {
        match address.matches(':').count() {
            0 => (address, DEFAULT_BMP_PORT),
            1 => {
                let (h, p) = address.split_once(':').unwrap_or((address, ""));
                (h, port(p)?)
            }
            // Several colons: an IPv6 literal without brackets, so without a port.
            _ => (address, DEFAULT_BMP_PORT),
        }
    };
    check_host(host)?;
    Ok((host, port))
}

/// A host name or IP literal: non-empty, no whitespace, no characters that would make it
/// ambiguous in `host:port` form.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty host".to_string());
    }
    if let Some(c) = host
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "[]/".contains(*c))
    {
        return Err(format!("invalid character {c:?} in host {host:?}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
