//! The data listeners of a running ferry: which to bind, keep or retire when a config arrives
//! ([`plan`], pure), and the handle of each running one (its task, stop signal and TLS slot).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, Listener, Protocol};
use crate::proxy::http::{HttpListener, TlsSlot};
use crate::proxy::tcp::TcpProxy;
use crate::table::store::Store;
use crate::tls::{CertSet, ServerTls};

/// What a new config does to the running listeners, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// New, or changed in address or protocol: bound afresh (a changed one replaces the old,
    /// which then drains).
    pub bind: Vec<String>,
    /// Same name, address and protocol: left running untouched (its settings come from the table).
    pub keep: Vec<String>,
    /// Gone from the config: stop accepting and drain.
    pub retire: Vec<String>,
}

/// How a running listener was configured: (address as configured, port 0 staying 0; protocol).
pub type Shape = (SocketAddr, Protocol);

/// Decides, without touching a socket, what `config` does to listeners running as `current`.
pub fn plan(current: &HashMap<String, Shape>, config: &Config) -> Plan {
    let mut p = Plan::default();
    for l in &config.listeners {
        match current.get(&l.name) {
            Some(&shape) if shape == (l.bind, l.protocol) => p.keep.push(l.name.clone()),
            _ => p.bind.push(l.name.clone()),
        }
    }
    let mut retire: Vec<String> =
        current.keys().filter(|n| !config.listeners.iter().any(|l| &l.name == *n)).cloned().collect();
    retire.sort();
    p.retire = retire;
    p
}

/// Binds with SO_REUSEADDR and a deep backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(4096)
}

/// One running listener.
pub struct ListenerHandle {
    pub shape: Shape,
    /// As bound.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    pub task: JoinHandle<()>,
    /// HTTP listeners: the TLS they terminate (empty slot: plain HTTP).
    tls: Option<TlsSlot>,
}

impl ListenerHandle {
    /// Starts serving `l` on the bound `sock`.
    pub fn spawn(l: &Listener, sock: TcpListener, store: &Arc<Store>) -> ListenerHandle {
        let addr = sock.local_addr().expect("bound socket has an address");
        let (stop, rx) = watch::channel(false);
        let (task, tls) = match l.protocol {
            Protocol::Http => {
                let slot = TlsSlot::default();
                let shared = Arc::new(HttpListener::new(&l.name, addr.port(), store.clone(), slot.clone()));
                (tokio::spawn(crate::proxy::http::serve(sock, shared, rx)), Some(slot))
            }
            Protocol::Tcp => {
                let shared = Arc::new(TcpProxy::new(&l.name, store.clone()));
                (tokio::spawn(crate::proxy::tcp::serve(sock, shared, rx)), None)
            }
        };
        ListenerHandle { shape: (l.bind, l.protocol), addr, stop, task, tls }
    }

    pub fn server_tls(&self) -> Option<Arc<ServerTls>> {
        self.tls.as_ref().and_then(|t| t.load_full())
    }

    /// Installs the listener's TLS as the new config has it: new certificates into the existing
    /// acceptor (sessions and tickets stay valid), a new acceptor, or none.
    pub fn set_tls(&self, l: &Listener, certs: &mut HashMap<String, CertSet>) {
        let Some(slot) = &self.tls else { return };
        let fresh = |set, t: &crate::config::ListenerTls| {
            // The client CA was checked when the config was read; if it broke since, no client
            // certificate is asked for, and requests that need one are refused.
            let client = t.client.as_ref().map(|c| match crate::tls::client_verifier(c) {
                Ok(v) => (c.clone(), Some(v)),
                Err(e) => {
                    tracing::error!(listener = %l.name, error = %e, "client CA unusable");
                    (c.clone(), None)
                }
            });
            ServerTls::new(set, t.certificates.clone(), client)
        };
        match (certs.remove(&l.name), &l.tls, slot.load_full()) {
            // Same client certificate settings: new certificates into the existing acceptor.
            (Some(set), Some(t), Some(cur)) if cur.client == t.client => cur.replace(set, t.certificates.clone()),
            (Some(set), Some(t), _) => slot.store(Some(fresh(set, t))),
            _ => slot.store(None),
        }
    }

    /// Stops accepting; open connections are asked to finish. Returns the task to await.
    pub fn stop(self) -> JoinHandle<()> {
        let _ = self.stop.send(true);
        self.task
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listeners: &str) -> Config {
        let text = format!("listeners:\n{listeners}backends:\n  b: {{ addresses: [10.0.0.1:80] }}\n");
        Config::parse("t.yaml", &text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn start_binds_everything() {
        let c = config(
            "  - { name: web, bind: 127.0.0.1:8080, routes: [ { backend: b } ] }\n  - { name: db, bind: 127.0.0.1:3306, protocol: tcp, backend: b }\n",
        );
        let p = plan(&HashMap::new(), &c);
        assert_eq!(p, Plan { bind: names(&["web", "db"]), keep: vec![], retire: vec![] });
    }

    #[test]
    fn unchanged_kept_moved_rebound_removed_retired() {
        let running: HashMap<String, Shape> = [
            ("web", "127.0.0.1:8080", Protocol::Http),
            ("db", "127.0.0.1:3306", Protocol::Tcp),
            ("old", "127.0.0.1:9000", Protocol::Http),
            ("flip", "127.0.0.1:7000", Protocol::Http),
            ("any", "127.0.0.1:0", Protocol::Http),
        ]
        .into_iter()
        .map(|(n, a, p)| (n.to_string(), (a.parse().unwrap(), p)))
        .collect();
        let c = config(concat!(
            "  - { name: web, bind: 127.0.0.1:8080, routes: [ { backend: b } ] }\n",
            "  - { name: db, bind: 127.0.0.1:3307, protocol: tcp, backend: b }\n",
            "  - { name: flip, bind: 127.0.0.1:7000, protocol: tcp, backend: b }\n",
            "  - { name: any, bind: 127.0.0.1:0, routes: [ { backend: b } ] }\n",
            "  - { name: new, bind: 127.0.0.1:8081, routes: [ { backend: b } ] }\n",
        ));
        let p = plan(&running, &c);
        assert_eq!(p.keep, names(&["web", "any"]), "same address (port 0 compares as written) and protocol");
        assert_eq!(p.bind, names(&["db", "flip", "new"]), "moved, protocol changed, new");
        assert_eq!(p.retire, names(&["old"]));
    }
}
