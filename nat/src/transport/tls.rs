//! TLS for the QUIC links: a throwaway self-signed certificate per process,
//! and verifiers that accept any well-formed certificate.
//!
//! The certificate is not what authenticates a peer: the schnorrkel Hello
//! signed over the connection's exporter value is (see `hello`). The
//! verifiers therefore skip chain and name checks, but they still verify the
//! handshake signatures with the ring provider's algorithms, so each side
//! proves it holds the key of the certificate it presented, and TLS 1.3 keeps
//! its usual guarantees for the session the Hello is bound to.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, WebPkiSupportedAlgorithms};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::Arc;
use thiserror::Error;

/// The one application protocol the links speak.
pub const ALPN: &[u8] = b"pos/1";

/// The server name a dialler puts in its ClientHello. Nobody checks it: the
/// expected identity is checked in the Hello instead.
pub(crate) const SERVER_NAME: &str = "pos-peer";

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("quic crypto config: {0}")]
    Quic(String),
}

/// Accepts any certificate that parses, and checks handshake signatures.
#[derive(Debug)]
struct AnyCertificate {
    algs: WebPkiSupportedAlgorithms,
}

impl AnyCertificate {
    fn check_syntax(end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        ParsedCertificate::try_from(end_entity).map(|_| ())
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Self::check_syntax(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for AnyCertificate {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Self::check_syntax(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    // Mandatory so the dialler also proves possession of a certificate key;
    // the default already says so, stated here because it matters.
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The rustls halves of one process's QUIC crypto, ready for quinn.
pub(crate) struct TlsConfigs {
    pub client: quinn::crypto::rustls::QuicClientConfig,
    pub server: quinn::crypto::rustls::QuicServerConfig,
}

/// A fresh self-signed certificate and the client and server configurations
/// that present it. TLS 1.3 only (QUIC requires it), ring provider, ALPN
/// [`ALPN`].
pub(crate) fn configs() -> Result<TlsConfigs, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])?;
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = || -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()).into()
    };
    let verifier = Arc::new(AnyCertificate {
        algs: provider.signature_verification_algorithms,
    });

    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_auth_cert(vec![cert.clone()], key())?;
    client.alpn_protocols = vec![ALPN.to_vec()];

    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key())?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    // 0-RTT data could be replayed; links send nothing before the Hello anyway.
    server.max_early_data_size = 0;

    Ok(TlsConfigs {
        client: quinn::crypto::rustls::QuicClientConfig::try_from(client)
            .map_err(|e| TlsError::Quic(e.to_string()))?,
        server: quinn::crypto::rustls::QuicServerConfig::try_from(server)
            .map_err(|e| TlsError::Quic(e.to_string()))?,
    })
}
