//! Throwaway PKI for the test control planes (the shared apiserver and the real node's): a CA,
//! the apiserver's serving certificate, client certificates, the service-account key pair and the
//! static token file, each written into one directory under the file names the flags point at.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A CA with its files in `dir`: `ca.crt`, and the service-account keys `sa.key` / `sa.pub`.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// One line of the apiserver's `--token-auth-file`.
pub struct Token<'a> {
    pub token: &'a str,
    pub user: &'a str,
    pub uid: &'a str,
    /// Empty for none.
    pub group: &'a str,
}

fn serving_params(common_name: &str, names: &[&str], addresses: &[Ipv4Addr]) -> CertificateParams {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("serving params");
    for a in addresses {
        params.subject_alt_names.push(SanType::IpAddress((*a).into()));
    }
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Pki {
    /// A new CA named `ca_name`, and a service-account key pair.
    pub fn new(dir: &Path, ca_name: &str) -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
        write(&dir.join("ca.crt"), &ca_cert.pem());

        let sa_key = KeyPair::generate().expect("service-account key");
        write(&dir.join("sa.key"), &sa_key.serialize_pem());
        write(&dir.join("sa.pub"), &sa_key.public_key_pem());
        Self { dir: dir.to_owned(), ca_pem: ca_cert.pem(), issuer: Issuer::new(ca, ca_key) }
    }

    /// The apiserver's serving certificate `apiserver.crt` / `apiserver.key` for these names and
    /// addresses.
    pub fn apiserver(&self, names: &[&str], addresses: &[Ipv4Addr]) {
        self.sign("apiserver", serving_params("kube-apiserver", names, addresses));
    }

    /// A serving certificate for these names and addresses, named `common_name`, signed by this
    /// CA and written nowhere: its PEM and its key's PEM.
    pub fn serving(&self, common_name: &str, names: &[&str], addresses: &[Ipv4Addr]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let cert = serving_params(common_name, names, addresses).signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate `{file}.crt` / `{file}.key` for user `user` in group `group`.
    pub fn client(&self, file: &str, user: &str, group: &str) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, user);
        params.distinguished_name.push(DnType::OrganizationName, group);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(file, params);
    }

    /// The static token file `tokens.csv`.
    pub fn tokens(&self, tokens: &[Token]) {
        let lines: String = tokens
            .iter()
            .map(|t| {
                let group = if t.group.is_empty() { String::new() } else { format!("\"{}\"", t.group) };
                format!("{},{},{},{group}\n", t.token, t.user, t.uid)
            })
            .collect();
        write(&self.dir.join("tokens.csv"), &lines);
    }

    /// The path of one of this PKI's files, as a flag's value.
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn sign(&self, file: &str, params: CertificateParams) {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign certificate");
        write(&self.dir.join(format!("{file}.crt")), &cert.pem());
        write(&self.dir.join(format!("{file}.key")), &key.serialize_pem());
    }
}
