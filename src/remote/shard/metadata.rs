//! Remote Write 1.0's metadata sender: the core's family metadata every `send_interval`, in
//! requests of its own of at most `metadata_config.max_samples_per_send` families, as
//! Prometheus sends it. A request that keeps failing is given up at the next interval.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use super::Shard;
use super::outcome::{Outcome, jitter};
use super::request::LaneConn;
use crate::log::Level;
use crate::runtime::Instant;

impl Shard {
    pub(super) async fn run_metadata(self: Rc<Self>) {
        let cfg = &self.ep.cfg.metadata;
        let shutdown = self.ctl.shutdown.clone();
        let mut lc = LaneConn::new(&self.ep);
        let mut body = Vec::new();
        while !crate::runtime::sleep_or(cfg.send_interval, &shutdown).await {
            if self.retired.get() {
                break;
            }
            let items = self.reported.active_families(cfg.send_interval * 2);
            let deadline = Instant::now() + cfg.send_interval;
            for chunk in items.chunks(cfg.max_samples_per_send) {
                body.clear();
                crate::remote::metadata::encode_metadata(chunk, &mut body);
                let Some(len) = lc.compress(&body) else {
                    continue;
                };
                let compressed = std::mem::take(&mut lc.compressed);
                let mut backoff = self.ep.cfg.queue.min_backoff;
                let mut attempt = 0;
                loop {
                    match self
                        .attempt(&mut lc, &compressed[..len], attempt, None)
                        .await
                    {
                        Outcome::Sent => {
                            self.stats
                                .metadata_sent
                                .fetch_add(chunk.len() as u64, Relaxed);
                            self.stats.metadata_bytes.fetch_add(len as u64, Relaxed);
                            break;
                        }
                        Outcome::Drop { reason } | Outcome::Downgrade { reason } => {
                            self.stats
                                .metadata_failed
                                .fetch_add(chunk.len() as u64, Relaxed);
                            crate::log!(
                                Level::Error,
                                "remote",
                                "non-recoverable error sending metadata; dropped",
                                remote_name = self.ep.cfg.name,
                                url = self.ep.url,
                                err = reason
                            );
                            break;
                        }
                        Outcome::Retry { after, .. } => {
                            self.stats
                                .metadata_retried
                                .fetch_add(chunk.len() as u64, Relaxed);
                            let pause = after.unwrap_or_else(|| jitter(backoff));
                            backoff = (backoff * 2).min(self.ep.cfg.queue.max_backoff);
                            if Instant::now() + pause >= deadline
                                || crate::runtime::sleep_or(pause, &shutdown).await
                            {
                                self.stats
                                    .metadata_failed
                                    .fetch_add(chunk.len() as u64, Relaxed);
                                break;
                            }
                            attempt += 1;
                        }
                    }
                }
                lc.compressed = compressed;
                if shutdown.is_set() {
                    return;
                }
            }
        }
    }
}
