//! TLS 1.3 between a shop's paired devices: each side shows its own self-signed certificate and
//! accepts the other's only when its key belongs to a live member of the roster. Names and dates
//! in certificates are ignored (devices are reached by address, and shop clocks drift); the
//! handshake signature is checked for real with the certificate's key (rustls with ring).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, ServerConfig,
    SignatureScheme,
};

use crate::{DeviceId, Identity, Roster};

/// ring, the one provider in the tree (aws-lc stays out of it). rustls 0.23.48 deprecates it for
/// lacking post-quantum key exchange; X25519 is what protects a shop's LAN today.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The public key (SubjectPublicKeyInfo, DER) a certificate carries, parsed as X.509.
pub fn certificate_key(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(parsed.subject_public_key_info().as_ref().to_vec())
}

/// The device a peer's certificate chain belongs to (its first certificate's key).
pub fn peer_device(certs: &[CertificateDer<'_>]) -> Option<DeviceId> {
    certs
        .first()
        .and_then(certificate_key)
        .map(|k| DeviceId::of_public_key(&k))
}

/// Accepts a certificate whose key is a live roster member's; nothing else about it matters.
#[derive(Debug)]
struct RosterVerifier {
    roster: Roster,
    algorithms: WebPkiSupportedAlgorithms,
}

impl RosterVerifier {
    fn new(roster: Roster) -> RosterVerifier {
        RosterVerifier {
            roster,
            algorithms: provider().signature_verification_algorithms,
        }
    }

    /// `cert` is a live member's (a server must also be one that may lead: peers call only the
    /// hub, so a till's or a screen's key never answers as one).
    fn member(&self, cert: &CertificateDer<'_>, server: bool) -> Result<(), Error> {
        let key = certificate_key(cert)
            .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
        match self.roster.live_key(&key) {
            Some((_, m)) if !server || m.role == crate::DeviceRole::HubEligible => Ok(()),
            // Not in the roster, revoked, or not one that may lead: the same answer, so a
            // prober learns nothing.
            _ => Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn schemes() -> Vec<SignatureScheme> {
        // Every device key is ECDSA P-256 (rcgen's, made at first start).
        vec![SignatureScheme::ECDSA_NISTP256_SHA256]
    }
}

impl ServerCertVerifier for RosterVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.member(end_entity, true)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::General("TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        RosterVerifier::schemes()
    }
}

impl ClientCertVerifier for RosterVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// Browsers and a device that is pairing connect without a certificate; the route guard
    /// lets them reach the public routes only.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.member(end_entity, false)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::General("TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        RosterVerifier::schemes()
    }
}

fn key_of(identity: &Identity) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_pkcs8_der()))
}

/// This node's server side: TLS 1.3 only, its own certificate, members' certificates asked for.
pub fn server_config(identity: &Identity, roster: Roster) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_client_cert_verifier(Arc::new(RosterVerifier::new(roster)))
        .with_single_cert(
            vec![CertificateDer::from(identity.cert_der().to_vec())],
            key_of(identity),
        )
        .expect("the device certificate matches its key");
    // No resumption: a resumed session skips the certificate check, and a device removed
    // from the roster must not come back on a ticket from before.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// This node's client side: TLS 1.3 only, its own certificate shown, members' servers accepted.
pub fn client_config(identity: &Identity, roster: Roster) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RosterVerifier::new(roster)))
        .with_client_auth_cert(
            vec![CertificateDer::from(identity.cert_der().to_vec())],
            key_of(identity),
        )
        .expect("the device certificate matches its key");
    config.resumption = rustls::client::Resumption::disabled();
    // HTTP/1.1 only: the node's server speaks nothing else.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use serde_json::{Map, Value};

    use super::*;
    use crate::roster;

    fn identity() -> (tempfile::TempDir, Identity) {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::load_or_create(dir.path()).unwrap();
        (dir, id)
    }

    fn row(of: &Identity, revoked: bool) -> Map<String, Value> {
        let mut r = Map::new();
        r.insert("id".into(), of.device_id().to_string().into());
        r.insert("role".into(), "hub-eligible".into());
        r.insert(
            "public_key".into(),
            roster::encode(&of.public_key_der()).into(),
        );
        if revoked {
            r.insert("revoked_at".into(), "2026-12-07T00:00:00Z".into());
        }
        r
    }

    /// One handshake over a real socket: what the server saw of the client (its device), or
    /// the error of whichever side refused.
    fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    ) -> Result<Option<DeviceId>, String> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = std::thread::spawn(move || -> Result<Option<DeviceId>, String> {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(server).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).map_err(|e| e.to_string())?;
            tls.write_all(b"!").map_err(|e| e.to_string())?;
            let _ = tls.flush();
            Ok(tls.conn.peer_certificates().and_then(peer_device))
        });
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(client, name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
        let sent = tls
            .write_all(b"?")
            .and_then(|()| tls.flush())
            .and_then(|()| tls.read_exact(&mut [0u8; 1]));
        let seen = served.join().unwrap();
        sent.map_err(|e| e.to_string())?;
        seen
    }

    #[test]
    fn two_members_connect_and_the_server_knows_which_device_called() {
        let ((_a, hub), (_b, till)) = (identity(), identity());
        let roster = Roster::new(hub.device_id().clone(), vec![]);
        roster.reload(&[row(&hub, false), row(&till, false)]);
        let seen = handshake(
            server_config(&hub, roster.clone()),
            client_config(&till, roster),
        );
        assert_eq!(seen, Ok(Some(till.device_id().clone())));
    }

    #[test]
    fn a_device_outside_the_roster_is_refused_both_ways() {
        let ((_a, hub), (_b, till), (_c, guest)) = (identity(), identity(), identity());
        let roster = Roster::new(hub.device_id().clone(), vec![]);
        roster.reload(&[row(&hub, false), row(&till, false)]);
        // A guest's client is refused by the hub.
        let guests_roster = Roster::new(guest.device_id().clone(), vec![]);
        guests_roster.reload(&[row(&hub, false), row(&guest, false)]);
        assert!(
            handshake(
                server_config(&hub, roster.clone()),
                client_config(&guest, guests_roster.clone())
            )
            .is_err()
        );
        // A guest's server is refused by a till.
        assert!(
            handshake(
                server_config(&guest, guests_roster),
                client_config(&till, roster)
            )
            .is_err()
        );
    }

    #[test]
    fn a_revoked_device_is_refused_from_its_next_handshake() {
        let ((_a, hub), (_b, till)) = (identity(), identity());
        let roster = Roster::new(hub.device_id().clone(), vec![]);
        roster.reload(&[row(&hub, false), row(&till, false)]);
        let gone = roster.reload(&[row(&hub, false), row(&till, true)]);
        assert_eq!(gone, vec![till.device_id().clone()]);
        assert!(
            handshake(
                server_config(&hub, roster.clone()),
                client_config(&till, roster)
            )
            .is_err()
        );
    }

    #[test]
    fn a_till_key_never_answers_as_a_hub() {
        let ((_a, hub), (_b, till)) = (identity(), identity());
        let mut till_row = row(&till, false);
        till_row.insert("role".into(), "till".into());
        let roster = Roster::new(hub.device_id().clone(), vec![]);
        roster.reload(&[row(&hub, false), till_row]);
        // The till as a server (a stolen till claiming to be the hub): refused.
        assert!(
            handshake(
                server_config(&till, roster.clone()),
                client_config(&hub, roster)
            )
            .is_err()
        );
    }

    #[test]
    fn a_device_removed_after_a_handshake_cannot_resume_that_session() {
        let ((_a, hub), (_b, till)) = (identity(), identity());
        let roster = Roster::new(hub.device_id().clone(), vec![]);
        roster.reload(&[row(&hub, false), row(&till, false)]);
        let (server, client) = (
            server_config(&hub, roster.clone()),
            client_config(&till, roster.clone()),
        );
        assert!(handshake(server.clone(), client.clone()).is_ok());
        roster.reload(&[row(&hub, false), row(&till, true)]);
        // The same client (its session cache) and server: a resumed session would skip the
        // certificate check.
        assert!(handshake(server, client).is_err());
    }

    #[test]
    fn a_joiner_trusts_the_device_it_paired_with_until_the_roster_arrives() {
        let ((_a, hub), (_b, till)) = (identity(), identity());
        let anchor = crate::Anchor {
            device_id: hub.device_id().clone(),
            name: "Manager PC".into(),
            role: crate::DeviceRole::HubEligible,
            public_key: roster::encode(&hub.public_key_der()),
        };
        let tills = Roster::new(till.device_id().clone(), vec![anchor]);
        assert!(tills.is_paired());
        let hubs = Roster::new(hub.device_id().clone(), vec![]);
        hubs.reload(&[row(&hub, false), row(&till, false)]);
        assert!(
            handshake(
                server_config(&hub, hubs.clone()),
                client_config(&till, tills.clone())
            )
            .is_ok()
        );
        // Once the roster arrives it alone decides: here it revoked the hub.
        tills.reload(&[row(&hub, true), row(&till, false)]);
        assert!(handshake(server_config(&hub, hubs), client_config(&till, tills)).is_err());
    }
}
