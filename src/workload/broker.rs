//! An embedded Kafka broker: librdkafka's mock cluster, a real Kafka-protocol broker on loopback
//! that any client can use, for trying sessionize out, the demo and the tests.
//!
//! The mock cluster listens on a port of the kernel's choosing. To serve a fixed port, a small
//! TCP relay listens there and the broker advertises the relay's address, so that every client
//! connection, including those made after reading metadata, goes through it.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};

/// A running one-broker mock cluster. Dropping it stops the broker.
///
/// ```no_run
/// let broker = sessionize::workload::EmbeddedBroker::start(None).unwrap();
/// broker.create_topic("clickstream-events", 4).unwrap();
/// println!("bootstrap servers: {}", broker.bootstrap_servers());
/// ```
pub struct EmbeddedBroker {
    /// The client that owns the mock cluster: librdkafka destroys the cluster with it.
    owner: BaseProducer,
    bootstrap: String,
}

/// The mock cluster's only broker.
const BROKER_ID: i32 = 1;

impl EmbeddedBroker {
    /// Starts the broker; with `port`, clients reach it at `127.0.0.1:port`.
    pub fn start(port: Option<u16>) -> Result<Self> {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()
            .context("cannot start the embedded Kafka broker")?;
        let direct = owner
            .client()
            .mock_cluster()
            .context("librdkafka did not create a mock cluster")?
            .bootstrap_servers();
        let bootstrap = match port {
            None => direct,
            Some(port) => {
                let listener = TcpListener::bind(("127.0.0.1", port)).with_context(|| {
                    format!("cannot listen on 127.0.0.1:{port}: is another broker running there?")
                })?;
                let port = listener.local_addr()?.port();
                let host = std::ffi::CString::new("127.0.0.1").expect("no NUL");
                // SAFETY: the cluster pointer belongs to `owner`, which outlives this call; the
                // call copies the host name.
                unsafe {
                    let cluster = rdkafka::bindings::rd_kafka_handle_mock_cluster(
                        owner.client().native_ptr(),
                    );
                    if cluster.is_null() {
                        bail!("librdkafka did not create a mock cluster");
                    }
                    rdkafka::bindings::rd_kafka_mock_broker_set_host_port(
                        cluster,
                        BROKER_ID,
                        host.as_ptr(),
                        port as i32,
                    );
                }
                thread::Builder::new()
                    .name("broker-relay".into())
                    .spawn(move || relay(listener, direct))?;
                format!("127.0.0.1:{port}")
            }
        };
        Ok(EmbeddedBroker { owner, bootstrap })
    }

    /// The `bootstrap.servers` clients should use.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates `topic` with `partitions` partitions. Topics a client uses without creating them
    /// are created with librdkafka's default of 4 partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        self.cluster()?
            .create_topic(topic, partitions as i32, 1)
            .with_context(|| format!("cannot create topic {topic:?}"))
    }

    fn cluster(
        &self,
    ) -> Result<rdkafka::mocking::MockCluster<'_, rdkafka::producer::DefaultProducerContext>> {
        self.owner
            .client()
            .mock_cluster()
            .context("the embedded broker is gone")
    }
}

/// Relays every connection accepted on `listener` to `upstream`, both ways.
fn relay(listener: TcpListener, upstream: String) {
    for client in listener.incoming().flatten() {
        let upstream = upstream.clone();
        let _ = thread::Builder::new()
            .name("broker-relay-conn".into())
            .spawn(move || {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(client_reader), Ok(server_reader)) =
                    (client.try_clone(), server.try_clone())
                else {
                    return;
                };
                let upward = thread::spawn(move || pipe(client_reader, server));
                pipe(server_reader, client);
                let _ = upward.join();
            });
    }
}

/// Copies `from` into `to` until either side closes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
