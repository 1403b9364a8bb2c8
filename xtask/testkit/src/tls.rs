//! HTTPS for the fake GitHub: a certificate authority made for the test, a
//! server certificate it signs for the loopback addresses, and [`Conn`], one
//! accepted connection, plain or TLS, that the handlers read and write.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// A CA made for one server: its certificate (what a client must trust) and
/// the server side signed by it.
pub(crate) struct TestCa {
    pub(crate) pem: String,
    pub(crate) config: Arc<ServerConfig>,
}

/// A fresh CA and a certificate it signs for 127.0.0.1, 127.0.0.2 and
/// localhost: what a private CA (GitHub Enterprise, a TLS-inspecting
/// proxy) looks like to a client. Panics on failure (test infrastructure).
pub(crate) fn make_ca() -> TestCa {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("testkit: CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "testkit private CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("testkit: CA key");
    let ca_cert = ca.self_signed(&ca_key).expect("testkit: self-sign the CA");
    let issuer = Issuer::new(ca, ca_key);

    let names = ["127.0.0.1", "127.0.0.2", "localhost"].map(String::from);
    let mut leaf = CertificateParams::new(names.to_vec()).expect("testkit: leaf params");
    leaf.distinguished_name
        .push(DnType::CommonName, "testkit fake GitHub");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().expect("testkit: leaf key");
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .expect("testkit: sign the leaf");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone()];
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("testkit: TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("testkit: server certificate");
    TestCa {
        pem: ca_cert.pem(),
        config: Arc::new(config),
    }
}

/// One accepted connection. TLS is set up on the first read or write, so a
/// client that refuses the certificate makes the handler's first read fail.
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Conn {
    pub(crate) fn new(tcp: TcpStream, tls: Option<&Arc<ServerConfig>>) -> io::Result<Conn> {
        Ok(match tls {
            None => Conn::Plain(tcp),
            Some(cfg) => {
                let server = ServerConnection::new(Arc::clone(cfg)).map_err(io::Error::other)?;
                Conn::Tls(Box::new(StreamOwned::new(server, tcp)))
            }
        })
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
        }
    }

    pub(crate) fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(d)
    }

    /// `Write`: the response is complete (TLS says so first, as servers do).
    /// `Both`: the connection is cut, as a failing network would.
    pub(crate) fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if let (Conn::Tls(t), Shutdown::Write) = (&mut *self, how) {
            t.conn.send_close_notify();
            let _ = t.flush();
        }
        self.tcp().shutdown(how)
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(t) => t.flush(),
        }
    }
}
