//! Certificates made at test time with rcgen: a CA and leaf certificates it signs, written
//! as PEM files (servers and configs take paths).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A test certificate authority.
pub struct TestCa {
    /// The signer.
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Where the PEM files go.
    dir: PathBuf,
}

/// A certificate and key on disk.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl Leaf {
    /// The certificate and key as tonic's identity.
    pub fn identity(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(
            std::fs::read(&self.cert).unwrap(),
            std::fs::read(&self.key).unwrap(),
        )
    }
}

impl TestCa {
    /// A fresh CA named `name`, its certificate written to `dir/name-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), issuer.pem()).unwrap();
        Self {
            issuer,
            dir: dir.join(format!("{name}-ca.pem")),
        }
    }

    /// The CA certificate's PEM file.
    pub fn cert_path(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate as tonic's type.
    pub fn certificate(&self) -> tonic::transport::Certificate {
        tonic::transport::Certificate::from_pem(self.issuer.pem())
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this CA, written next
    /// to the CA's file as `file.pem` / `file.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let dir = self.dir.parent().unwrap();
        let leaf = Leaf {
            cert: dir.join(format!("{file}.pem")),
            key: dir.join(format!("{file}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }
}
