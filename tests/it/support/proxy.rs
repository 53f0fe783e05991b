//! A TCP proxy between the app and PostgreSQL that a test can cut, to make the database
//! unreachable for the app alone (other tests share the server).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct DbProxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
}

impl DbProxy {
    /// Listens on a random local port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let cut = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let (accept_cut, accept_stalled, accept_gen) = (cut.clone(), stalled.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut changed = accept_gen.subscribe();
                if accept_stalled.load(Ordering::SeqCst) {
                    // A stalled database: the connection opens, and nothing ever comes back.
                    tokio::spawn(async move {
                        let _ = changed.changed().await;
                        drop(inbound);
                    });
                    continue;
                }
                if accept_cut.load(Ordering::SeqCst) {
                    drop(inbound); // refuse: the client sees the connection closed at once
                    continue;
                }
                let stalled = accept_stalled.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = changed.changed() => {
                            if stalled.load(Ordering::SeqCst) {
                                // Hold both ends open, forwarding nothing, until restored.
                                let _ = changed.changed().await;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, cut, stalled, generation }
    }

    /// Drops every open connection and refuses new ones (the database is down: connections
    /// are closed or refused at once).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Stops forwarding in both directions while keeping every connection open, and accepts
    /// new connections that never answer (the database hangs, or the network black-holes its
    /// packets: nothing is refused, nothing comes back).
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Ends a stall the way a failover does: new connections reach the database again, and
    /// every connection the stall holds stays open and silent for good (the lost host's).
    pub fn fail_over(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }

    /// Ends a cut or a stall; connections held by a stall are closed then.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        if self.stalled.swap(false, Ordering::SeqCst) {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}
