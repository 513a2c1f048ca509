//! TLS to a tenant's engine pod through the API server's port-forward, verified against
//! the tenant's own CA (from its `<tenant>-engine-tls` Secret) and the engine Service's
//! name: the API server carries bytes, it is not trusted with them.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Portforwarder};
use kube::{Client, ResourceExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tenantdb_crds::Tenant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use crate::{render, PluginError, Result};

/// The engine's port in its pod.
pub const ENGINE_PORT: u16 = 8080;

/// Where and how to open TLS connections to one tenant's engine.
#[derive(Clone)]
pub struct Tunnel {
    pods: Api<Pod>,
    /// The engine pod.
    pub pod: String,
    /// The name the engine's certificate must carry (its Service's), also the `Host`.
    pub host: String,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
}

/// One open connection: the TLS stream and the port-forward that carries it (which must
/// live as long as the stream).
pub struct Connection {
    /// The verified TLS stream.
    pub stream: TlsStream<Box<dyn Stream>>,
    _forwarder: Portforwarder,
}

/// A byte stream of a port-forward.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A client TLS configuration that trusts `ca_pem` alone.
pub fn client_config(ca_pem: &str) -> Result<rustls::ClientConfig> {
    let bad = |e: String| PluginError::Engine(format!("the tenant's CA certificate: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Tunnel {
    /// The tunnel to `tenant`'s engine: its pod must exist and its CA be issued.
    pub async fn to(client: &Client, tenant: &Tenant) -> Result<Tunnel> {
        let ns = tenant.namespace().unwrap_or_default();
        let name = tenant.name_any();
        let not_serving = || PluginError::NotServing(name.clone(), render::phase(tenant));
        let secret = format!("{name}-engine-tls");
        let ca = Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt(&secret)
            .await?
            .and_then(|s| s.data)
            .and_then(|d| d.get("ca.crt").cloned())
            .and_then(|v| String::from_utf8(v.0).ok())
            .ok_or_else(not_serving)?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        // With standbys, the primary: the pod its member agent labelled so (what the
        // -rw Service selects); alone, the one pod.
        let pod = if tenant.spec.replicas > 1 {
            let primary = kube::api::ListParams::default().labels(&format!(
                "tenantdb.io/tenant={name},tenantdb.io/role=primary"
            ));
            pods.list(&primary)
                .await?
                .items
                .into_iter()
                .find_map(|p| p.metadata.name)
                .ok_or_else(not_serving)?
        } else {
            format!("{name}-engine-0")
        };
        if pods.get_opt(&pod).await?.is_none() {
            return Err(not_serving());
        }
        let host = format!("{name}-engine-rw.{ns}.svc");
        let server_name =
            ServerName::try_from(host.clone()).map_err(|e| PluginError::Usage(e.to_string()))?;
        Ok(Tunnel {
            pods,
            pod,
            host,
            server_name,
            tls: tokio_rustls::TlsConnector::from(Arc::new(client_config(&ca)?)),
        })
    }

    /// Open a new verified connection.
    pub async fn open(&self) -> Result<Connection> {
        let mut forwarder = self.pods.portforward(&self.pod, &[ENGINE_PORT]).await?;
        let raw = forwarder.take_stream(ENGINE_PORT).ok_or_else(|| {
            PluginError::Engine(format!("port-forward to {} gave no stream", self.pod))
        })?;
        let raw: Box<dyn Stream> = Box::new(raw);
        let stream = self
            .tls
            .connect(self.server_name.clone(), raw)
            .await
            .map_err(|e| {
                PluginError::Engine(format!(
                    "TLS to {} ({}) failed: {e}; the engine must present a certificate of the tenant's CA",
                    self.pod, self.host
                ))
            })?;
        Ok(Connection {
            stream,
            _forwarder: forwarder,
        })
    }
}
