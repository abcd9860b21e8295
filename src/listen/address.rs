//! What `--listen` takes: `HOST:PORT`, `[V6]:PORT`, `:PORT`, `unix:/path`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// A listening address as configured (a port of 0 asks for any free one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// What a listening address looks like, for the errors.
pub const FORMS: &str =
    "HOST:PORT (HOST an IP address or localhost), [IPV6]:PORT, :PORT (every IPv4 interface) or unix:/PATH";

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("listen address {text:?}: {why}; expected {FORMS}");
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("no path after unix:"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("no :PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad(&format!("{port:?} is not a port number (0 to 65535)")))?;
        let ip = match host {
            "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            // A name would need a DNS lookup, which can hang a reload.
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                Some(v6) => v6
                    .parse::<std::net::Ipv6Addr>()
                    .map(IpAddr::V6)
                    .map_err(|_| bad(&format!("{v6:?} is not an IPv6 address")))?,
                None if host.contains(':') => {
                    return Err(bad("an IPv6 address goes in brackets, like [::1]:8080"))
                }
                None => host.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| {
                    bad(&format!(
                        "{host:?} is not an IP address (host names are not looked up)"
                    ))
                })?,
            },
        };
        Ok(ListenAddr::Tcp(SocketAddr::new(ip, port)))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl ListenAddr {
    /// As Server::Starter writes it in `SERVER_STARTER_PORT`: `HOST:PORT`
    /// or the socket's path.
    pub fn server_starter_form(&self) -> String {
        match self {
            ListenAddr::Tcp(addr) => addr.to_string(),
            ListenAddr::Unix(path) => path.display().to_string(),
        }
    }

    /// A name for `LISTEN_FDNAMES`, which allows no `:` nor control
    /// characters, and at most 255 bytes.
    pub fn fd_name(&self) -> String {
        let name: String = self
            .to_string()
            .chars()
            .map(|c| if c == ':' || c.is_control() { '_' } else { c })
            .collect();
        let mut end = name.len().min(255);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name[..end].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ListenAddr, String> {
        text.parse()
    }

    #[test]
    fn the_four_forms() {
        assert_eq!(
            parse("127.0.0.1:8080").unwrap().to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(parse(":80").unwrap().to_string(), "0.0.0.0:80");
        assert_eq!(parse("[::1]:0").unwrap().to_string(), "[::1]:0");
        assert_eq!(parse("localhost:9").unwrap().to_string(), "127.0.0.1:9");
        assert_eq!(
            parse("unix:/run/app.sock").unwrap(),
            ListenAddr::Unix("/run/app.sock".into())
        );
    }

    #[test]
    fn errors_name_the_address_and_the_forms() {
        for bad in [
            "8080",
            "host:80",
            "1.2.3.4:99999",
            "::1:80",
            "[zz]:1",
            "unix:",
            "1.2.3.4:x",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains("unix:/PATH"), "{e}");
        }
    }

    #[test]
    fn fd_names_have_no_colons() {
        let a = parse("[::1]:8080").unwrap();
        assert_eq!(a.fd_name(), "[__1]_8080");
        assert_eq!(a.server_starter_form(), "[::1]:8080");
        let u = parse("unix:/run/a.sock").unwrap();
        assert_eq!(u.fd_name(), "unix_/run/a.sock");
        assert_eq!(u.server_starter_form(), "/run/a.sock");
    }
}
