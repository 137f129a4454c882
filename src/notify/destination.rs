//! Where a webhook may be delivered: the guard against server-side request forgery (SSRF). A
//! tenant chooses the URL, and the server makes the request from inside the operator's network,
//! so without this check a subscription could reach the database, the cloud metadata service or
//! any internal HTTP service, and the delivery log would show the tenant its answers.
//!
//! [`DestinationPolicy::check_url`] judges the URL's text (and its host, when that is an IP
//! address); [`DestinationPolicy::check_ip`] judges each address the host resolves to, at every
//! attempt, in the delivery client's resolver (`notify::client`), which then connects to the
//! address it checked and no other.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

use crate::config::Settings;

/// The longest webhook URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// What the operator allows beyond the public internet over https.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    /// Accept plain `http://` URLs (`TDC_WEBHOOK_ALLOW_HTTP`).
    pub allow_http: bool,
    /// Ranges delivered to even though they are refused by default, for receivers on the
    /// operator's own network (`TDC_WEBHOOK_ALLOW_CIDRS`).
    pub allow: Vec<IpNet>,
}

/// The kinds of address a webhook is not delivered to (unless allow-listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// `0.0.0.0`, `::`: "this host" on many systems.
    Unspecified,
    /// `0.0.0.0/8`: "this network".
    ThisNetwork,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` (RFC 1918).
    Private,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// `100.64.0.0/10`, carrier-grade NAT (RFC 6598).
    SharedAddressSpace,
    /// `192.0.0.0/24`, IETF protocol assignments.
    ProtocolAssignments,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18.0.0/15`, `2001:2::/48`.
    Benchmarking,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `240.0.0.0/4` and the retired 6to4 relay anycast `192.88.99.0/24`.
    Reserved,
    /// `fc00::/7`, IPv6 unique local addresses (the IPv6 private range).
    UniqueLocal,
    /// `fec0::/10`, the retired IPv6 site-local range.
    SiteLocal,
    /// `100::/64`, the IPv6 discard prefix.
    Discard,
    /// The instance metadata services of the clouds: `169.254.169.254` (AWS, GCP, Azure, ...),
    /// `fd00:ec2::254` (AWS over IPv6), `100.100.100.200` (Alibaba).
    CloudMetadata,
}

impl std::fmt::Display for AddressClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unspecified => "an unspecified address",
            Self::ThisNetwork => "a \"this network\" address (0.0.0.0/8)",
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::LinkLocal => "a link-local address",
            Self::SharedAddressSpace => "a carrier-grade NAT address (100.64.0.0/10)",
            Self::ProtocolAssignments => "an IETF protocol assignment address (192.0.0.0/24)",
            Self::Documentation => "a documentation address",
            Self::Benchmarking => "a benchmarking address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::Reserved => "a reserved address",
            Self::UniqueLocal => "an IPv6 unique local address (fc00::/7)",
            Self::SiteLocal => "an IPv6 site-local address (fec0::/10)",
            Self::Discard => "an IPv6 discard address (100::/64)",
            Self::CloudMetadata => "a cloud metadata service address",
        })
    }
}

/// Why a webhook URL or address is refused. The messages are for the subscription's owner and
/// name the operator setting that would allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Longer than [`MAX_URL_BYTES`].
    #[error("the webhook URL is longer than {MAX_URL_BYTES} bytes")]
    TooLong,
    /// Not an absolute URL.
    #[error("the webhook URL is not a valid absolute URL: {0}")]
    Malformed(url::ParseError),
    /// `http://` while the operator allows only https.
    #[error(
        "the webhook URL must use https://; plain http:// is accepted only when the operator \
         sets TDC_WEBHOOK_ALLOW_HTTP=true"
    )]
    PlainHttp,
    /// Neither `https` nor `http`.
    #[error("the webhook URL must use https://, not {0}:")]
    Scheme(String),
    /// A user name or password in the URL: it would be sent to, and logged by, every hop.
    #[error(
        "the webhook URL must not contain a user name or password; receivers authenticate \
         deliveries by their signature"
    )]
    Credentials,
    /// No host to deliver to.
    #[error("the webhook URL has no host")]
    NoHost,
    /// An address of a refused class (for an IPv6 address that embeds an IPv4 one, the class of
    /// the embedded address).
    #[error("{}", address_refusal(*ip, *embedded, *class))]
    Address {
        /// The address as written or resolved.
        ip: IpAddr,
        /// The IPv4 address it embeds, when that is what was judged.
        embedded: Option<Ipv4Addr>,
        /// Why it is refused.
        class: AddressClass,
    },
    /// The host resolved, but to no address a webhook may reach.
    #[error("{host} resolves to no address a webhook may reach: {first}")]
    EveryAddress {
        /// The host name.
        host: String,
        /// The refusal of its first address.
        first: Box<Refused>,
    },
}

fn address_refusal(ip: IpAddr, embedded: Option<Ipv4Addr>, class: AddressClass) -> String {
    let what = match embedded {
        Some(v4) => format!("{ip} embeds {v4}, {class}"),
        None => format!("{ip} is {class}"),
    };
    format!(
        "{what}; webhooks are not delivered there unless the operator allows its range in \
         TDC_WEBHOOK_ALLOW_CIDRS"
    )
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(segments: [u16; 8], prefix: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// Refused IPv4 ranges; the first that contains an address names its class, so the metadata
/// addresses come before the ranges that hold them.
const REFUSED_V4: &[(Ipv4Net, AddressClass)] = &[
    (v4(169, 254, 169, 254, 32), AddressClass::CloudMetadata),
    (v4(100, 100, 100, 200, 32), AddressClass::CloudMetadata),
    (v4(0, 0, 0, 0, 32), AddressClass::Unspecified),
    (v4(0, 0, 0, 0, 8), AddressClass::ThisNetwork),
    (v4(127, 0, 0, 0, 8), AddressClass::Loopback),
    (v4(10, 0, 0, 0, 8), AddressClass::Private),
    (v4(172, 16, 0, 0, 12), AddressClass::Private),
    (v4(192, 168, 0, 0, 16), AddressClass::Private),
    (v4(169, 254, 0, 0, 16), AddressClass::LinkLocal),
    (v4(100, 64, 0, 0, 10), AddressClass::SharedAddressSpace),
    (v4(192, 0, 0, 0, 24), AddressClass::ProtocolAssignments),
    (v4(192, 0, 2, 0, 24), AddressClass::Documentation),
    (v4(198, 51, 100, 0, 24), AddressClass::Documentation),
    (v4(203, 0, 113, 0, 24), AddressClass::Documentation),
    (v4(198, 18, 0, 0, 15), AddressClass::Benchmarking),
    (v4(192, 88, 99, 0, 24), AddressClass::Reserved),
    (v4(224, 0, 0, 0, 4), AddressClass::Multicast),
    (v4(255, 255, 255, 255, 32), AddressClass::Broadcast),
    (v4(240, 0, 0, 0, 4), AddressClass::Reserved),
];

/// Refused IPv6 ranges, first match wins (see [`REFUSED_V4`]).
const REFUSED_V6: &[(Ipv6Net, AddressClass)] = &[
    (
        v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128),
        AddressClass::CloudMetadata,
    ),
    (v6([0; 8], 128), AddressClass::Unspecified),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), AddressClass::Loopback),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        AddressClass::LinkLocal,
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        AddressClass::UniqueLocal,
    ),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        AddressClass::SiteLocal,
    ),
    (
        v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        AddressClass::Multicast,
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        AddressClass::Documentation,
    ),
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        AddressClass::Documentation,
    ),
    (
        v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48),
        AddressClass::Benchmarking,
    ),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), AddressClass::Discard),
];

/// How an IPv6 range carries an IPv4 address.
#[derive(Clone, Copy)]
enum Embedding {
    /// In the last 32 bits.
    Last32,
    /// In bits 16..48 (6to4).
    SixToFour,
    /// In the last 32 bits, inverted (Teredo's client address).
    TeredoClient,
}

/// IPv6 ranges whose addresses stand for an IPv4 one: a packet to them can reach that IPv4
/// address (through the kernel, a NAT64 gateway or a tunnel relay), so they are judged by it.
const EMBEDDING_V6: &[(Ipv6Net, Embedding)] = &[
    // IPv4-mapped ::ffff:a.b.c.d.
    (v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), Embedding::Last32),
    // IPv4-translated ::ffff:0:a.b.c.d (RFC 2765).
    (v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96), Embedding::Last32),
    // IPv4-compatible ::a.b.c.d (deprecated; `::` and `::1` are classified before this).
    (v6([0; 8], 96), Embedding::Last32),
    // NAT64, well-known and local-use prefixes (RFC 6052, RFC 8215).
    (v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), Embedding::Last32),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), Embedding::Last32),
    // 6to4 (RFC 3056).
    (v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16), Embedding::SixToFour),
    // Teredo (RFC 4380).
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
        Embedding::TeredoClient,
    ),
];

/// The IPv4 address an IPv6 address stands for, if it is of a form that embeds one.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = ip.to_bits();
    EMBEDDING_V6
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, embedding)| {
            // Truncation is the point: each form keeps the IPv4 address in 32 of the 128 bits.
            let word = match embedding {
                Embedding::Last32 => bits as u32,
                Embedding::SixToFour => (bits >> 80) as u32,
                Embedding::TeredoClient => !(bits as u32),
            };
            Ipv4Addr::from_bits(word)
        })
}

fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(ip) => REFUSED_V4
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, class)| *class),
        IpAddr::V6(ip) => REFUSED_V6
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, class)| *class),
    }
}

impl DestinationPolicy {
    /// The policy the operator configured.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            allow_http: settings.webhook_allow_http,
            allow: settings.webhook_allow_cidrs.clone(),
        }
    }

    /// Parses and judges a webhook URL: https (or http when allowed), no credentials, a host,
    /// at most [`MAX_URL_BYTES`]; an IP-literal host is judged here, a name when it resolves.
    /// The parser is the WHATWG one browsers use, so `http://2130706433/`, `http://0x7f.1/` or
    /// `http://017700000001/` come back as the IPv4 address `127.0.0.1` and are judged as such.
    pub fn check_url(&self, text: &str) -> Result<Url, Refused> {
        if text.len() > MAX_URL_BYTES {
            return Err(Refused::TooLong);
        }
        let url = Url::parse(text).map_err(Refused::Malformed)?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err(Refused::PlainHttp),
            other => return Err(Refused::Scheme(other.to_owned())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::Credentials);
        }
        match url.host() {
            None => return Err(Refused::NoHost),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(Host::Domain(_)) => {}
        }
        Ok(url)
    }

    /// Judges one address: refused when it (or the IPv4 address it embeds) is of a refused
    /// [`AddressClass`], unless an allow-listed range contains it.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6),
            IpAddr::V4(_) => None,
        };
        let allowed = |ip: IpAddr| self.allow.iter().any(|net| net.contains(&ip));
        if allowed(ip) || embedded.is_some_and(|v4| allowed(IpAddr::V4(v4))) {
            return Ok(());
        }
        if let Some(class) = classify(ip) {
            return Err(Refused::Address {
                ip,
                embedded: None,
                class,
            });
        }
        match embedded.and_then(|v4| classify(IpAddr::V4(v4)).map(|class| (v4, class))) {
            Some((v4, class)) => Err(Refused::Address {
                ip,
                embedded: Some(v4),
                class,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass as C;

    fn strict() -> DestinationPolicy {
        DestinationPolicy {
            allow_http: true,
            allow: Vec::new(),
        }
    }

    fn class_of(policy: &DestinationPolicy, url: &str) -> Option<AddressClass> {
        match policy.check_url(url) {
            Ok(_) => None,
            Err(Refused::Address { class, .. }) => Some(class),
            Err(other) => panic!("{url}: refused for another reason: {other}"),
        }
    }

    #[test]
    fn every_spelling_of_a_refused_ip_literal_is_refused_with_its_class() {
        let cases: &[(&str, AddressClass)] = &[
            // Loopback, in every notation the WHATWG parser reads as IPv4.
            ("http://127.0.0.1/", C::Loopback),
            ("http://127.0.0.1./", C::Loopback),
            ("http://127.1/", C::Loopback),
            ("http://127.0.1/", C::Loopback),
            ("http://2130706433/", C::Loopback),
            ("http://0x7f000001/", C::Loopback),
            ("http://0x7f.1/", C::Loopback),
            ("http://0X7F.0.0.1/", C::Loopback),
            ("http://017700000001/", C::Loopback),
            ("http://0177.0.0.1/", C::Loopback),
            ("http://0177.0.0.01/", C::Loopback),
            ("http://127.255.255.254:8080/x", C::Loopback),
            ("http://%31%32%37.0.0.1/", C::Loopback),
            ("https://[::1]/", C::Loopback),
            ("https://[0:0:0:0:0:0:0:1]/", C::Loopback),
            // Unspecified and "this network".
            ("http://0/", C::Unspecified),
            ("http://0.0.0.0/", C::Unspecified),
            ("http://0x0/", C::Unspecified),
            ("https://[::]/", C::Unspecified),
            ("http://0.1.2.3/", C::ThisNetwork),
            ("http://16777215/", C::ThisNetwork),
            // Private.
            ("http://10.0.0.1/", C::Private),
            ("http://10.255.255.255/", C::Private),
            ("http://167772161/", C::Private),
            ("http://0xa.0.0.1/", C::Private),
            ("http://012.0.0.1/", C::Private),
            ("http://172.16.0.1/", C::Private),
            ("http://172.31.255.255/", C::Private),
            ("http://192.168.0.1/", C::Private),
            ("http://192.168.1/", C::Private),
            ("http://3232235777/", C::Private),
            // Link-local.
            ("http://169.254.0.1/", C::LinkLocal),
            ("http://169.254.255.255/", C::LinkLocal),
            ("https://[fe80::1]/", C::LinkLocal),
            ("https://[febf:ffff::1]/", C::LinkLocal),
            // Cloud metadata, however spelled.
            ("http://169.254.169.254/latest/meta-data/", C::CloudMetadata),
            ("http://2852039166/", C::CloudMetadata),
            ("http://0xa9fea9fe/", C::CloudMetadata),
            ("http://0xa9.0xfe.0xa9.0xfe/", C::CloudMetadata),
            ("http://0251.0376.0251.0376/", C::CloudMetadata),
            ("http://169.254.43518/", C::CloudMetadata),
            ("https://[fd00:ec2::254]/", C::CloudMetadata),
            ("http://100.100.100.200/", C::CloudMetadata),
            ("https://[::ffff:169.254.169.254]/", C::CloudMetadata),
            ("https://[::ffff:a9fe:a9fe]/", C::CloudMetadata),
            // Carrier-grade NAT.
            ("http://100.64.0.1/", C::SharedAddressSpace),
            ("http://100.127.255.255/", C::SharedAddressSpace),
            // Multicast, broadcast, reserved.
            ("http://224.0.0.1/", C::Multicast),
            ("http://239.255.255.250/", C::Multicast),
            ("https://[ff02::1]/", C::Multicast),
            ("http://255.255.255.255/", C::Broadcast),
            ("http://4294967295/", C::Broadcast),
            ("http://240.0.0.1/", C::Reserved),
            ("http://254.1.2.3/", C::Reserved),
            ("http://192.88.99.1/", C::Reserved),
            // Benchmarking, documentation, protocol assignments.
            ("http://198.18.0.1/", C::Benchmarking),
            ("http://198.19.255.255/", C::Benchmarking),
            ("https://[2001:2::1]/", C::Benchmarking),
            ("http://192.0.2.1/", C::Documentation),
            ("http://198.51.100.1/", C::Documentation),
            ("http://203.0.113.1/", C::Documentation),
            ("https://[2001:db8::1]/", C::Documentation),
            ("https://[3fff::1]/", C::Documentation),
            ("http://192.0.0.8/", C::ProtocolAssignments),
            // IPv6 private-like ranges.
            ("https://[fc00::1]/", C::UniqueLocal),
            ("https://[fd12:3456::1]/", C::UniqueLocal),
            ("https://[fec0::1]/", C::SiteLocal),
            ("https://[100::1]/", C::Discard),
            // IPv6 forms that embed a refused IPv4 address.
            ("https://[::ffff:127.0.0.1]/", C::Loopback),
            ("https://[::ffff:7f00:1]/", C::Loopback),
            ("https://[0:0:0:0:0:ffff:127.0.0.1]/", C::Loopback),
            ("https://[::ffff:10.0.0.1]/", C::Private),
            ("https://[::ffff:0:10.0.0.1]/", C::Private),
            ("https://[::127.0.0.1]/", C::Loopback),
            ("https://[::10.1.2.3]/", C::Private),
            ("https://[::ffff:0.0.0.0]/", C::Unspecified),
            ("https://[64:ff9b::127.0.0.1]/", C::Loopback),
            ("https://[64:ff9b::a9fe:a9fe]/", C::CloudMetadata),
            ("https://[64:ff9b:1::192.168.0.1]/", C::Private),
            ("https://[2002:7f00:1::]/", C::Loopback),
            ("https://[2002:a00:1::1]/", C::Private),
            ("https://[2002:a9fe:a9fe::]/", C::CloudMetadata),
            // Teredo: the client address is the last 32 bits inverted (~127.0.0.1).
            (
                "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
                C::Loopback,
            ),
            (
                "https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/",
                C::Private,
            ),
        ];

        for (url, class) in cases {
            assert_eq!(class_of(&strict(), url), Some(*class), "{url}");
        }
    }

    #[test]
    fn public_addresses_and_host_names_pass_the_url_check() {
        for url in [
            "https://8.8.8.8/",
            "https://134744072/",
            "https://1.1.1.1:8443/hook?x=1",
            "https://93.184.215.14/",
            "https://100.63.255.255/",
            "https://100.128.0.1/",
            "https://172.15.255.255/",
            "https://172.32.0.1/",
            "https://169.253.255.255/",
            "https://198.17.255.255/",
            "https://198.20.0.1/",
            "https://223.255.255.255/",
            "https://[2606:4700:4700::1111]/",
            "https://[::ffff:8.8.8.8]/",
            "https://[64:ff9b::8.8.8.8]/",
            "https://[2002:808:808::1]/",
            "https://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/",
            // Names are judged by what they resolve to, in the client's resolver.
            "https://example.com/hook",
            "https://localhost/",
            "https://LOCALHOST./",
        ] {
            assert!(
                strict().check_url(url).is_ok(),
                "{url}: {:?}",
                strict().check_url(url)
            );
        }
    }

    #[test]
    fn the_url_check_refuses_other_schemes_credentials_and_overlong_or_malformed_urls() {
        let https_only = DestinationPolicy::default();
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));

        let cases: &[(&str, Refused)] = &[
            ("http://example.com/", Refused::PlainHttp),
            ("HTTP://example.com/", Refused::PlainHttp),
            ("ftp://example.com/", Refused::Scheme("ftp".into())),
            ("file:///etc/passwd", Refused::Scheme("file".into())),
            ("gopher://example.com/", Refused::Scheme("gopher".into())),
            ("javascript:alert(1)", Refused::Scheme("javascript".into())),
            ("https://user:pw@example.com/", Refused::Credentials),
            ("https://user@example.com/", Refused::Credentials),
            ("https://:pw@example.com/", Refused::Credentials),
            ("https://", Refused::Malformed(url::ParseError::EmptyHost)),
            (
                "example.com/hook",
                Refused::Malformed(url::ParseError::RelativeUrlWithoutBase),
            ),
            (
                "https://exa mple.com/",
                Refused::Malformed(url::ParseError::IdnaError),
            ),
            (
                "http://256.0.0.1/",
                Refused::Malformed(url::ParseError::InvalidIpv4Address),
            ),
            (&long, Refused::TooLong),
        ];

        for (url, refused) in cases {
            assert_eq!(https_only.check_url(url).as_ref(), Err(refused), "{url}");
        }
        let at_the_limit = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES - 20));
        assert_eq!(at_the_limit.len(), MAX_URL_BYTES);
        assert!(https_only.check_url(&at_the_limit).is_ok());
        assert!(https_only.check_url("https://example.com/").is_ok());
    }

    #[test]
    fn an_allow_listed_range_is_delivered_to_and_nothing_else_is() {
        let policy = DestinationPolicy {
            allow_http: true,
            allow: vec![
                "127.0.0.0/8".parse().expect("cidr"),
                "fd00:1::/32".parse().expect("cidr"),
            ],
        };

        for ok in [
            "127.0.0.1",
            "127.9.9.9",
            "::ffff:127.0.0.1",
            "64:ff9b::127.0.0.1",
            "fd00:1::5",
        ] {
            let ip: IpAddr = ok.parse().expect("ip");
            assert_eq!(policy.check_ip(ip), Ok(()), "{ok}");
        }
        assert!(policy.check_url("http://2130706433:9999/hook").is_ok());
        for refused in [
            "10.0.0.1",
            "::1",
            "169.254.169.254",
            "fd00:2::5",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = refused.parse().expect("ip");
            assert!(policy.check_ip(ip).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_refusal_says_what_the_address_is_and_which_setting_allows_it() {
        let policy = DestinationPolicy::default();

        let plain = policy.check_url("http://example.com/").expect_err("http");
        let direct = policy.check_url("https://10.1.2.3/").expect_err("private");
        let embedded = policy
            .check_ip("::ffff:169.254.169.254".parse().expect("ip"))
            .expect_err("metadata");

        assert!(
            plain.to_string().contains("TDC_WEBHOOK_ALLOW_HTTP"),
            "{plain}"
        );
        assert_eq!(
            direct.to_string(),
            "10.1.2.3 is a private address; webhooks are not delivered there unless the \
             operator allows its range in TDC_WEBHOOK_ALLOW_CIDRS"
        );
        assert!(
            embedded
                .to_string()
                .starts_with("::ffff:169.254.169.254 embeds 169.254.169.254, a cloud metadata"),
            "{embedded}"
        );
    }
}
