//! Notifications: the core's outputs handed to the world after a pass is folded. Log lines
//! and job endings (metrics, the status page), and the `jobs_changed` /
//! `machines_changed` lines queued to every client whose watches select a change, rendered
//! once for all the clients watching everything. BMP requests are returned to the pass,
//! which submits them last.

use super::client::{self, Client};
use super::touched::Touched;
use super::Server;
use crate::core::{Effect, Lifecycle};
use crate::protocol;

impl Server {
    /// Hand the core's outputs to the world: log lines and notifications now; the BMP
    /// requests are returned, for the caller to submit once the sockets are written.
    pub(super) fn release_effects(
        &mut self,
        touched: &mut Touched,
    ) -> Vec<crate::core::BmpRequest> {
        let mut bmp_requests = Vec::new();
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::Bmp(r) => bmp_requests.push(r),
                Effect::Log(line) => self.log.info(&line),
                // (The log lines say the same for the admin; replay reads these.) The
                // metrics count endings by their typed reason.
                Effect::Lifecycle(Lifecycle::Ended {
                    job_id,
                    reason,
                    text,
                }) => {
                    self.metrics.job_ended(reason);
                    if let Some(h) = &mut self.http {
                        h.note_ended(job_id, reason, text, self.core.now_us());
                    }
                }
                Effect::Lifecycle(_) => {}
                Effect::JobsChanged(ids) => {
                    if let Some(h) = &mut self.http {
                        h.note_change();
                    }
                    self.notify_watchers(&ids, |c| &c.jobs, protocol::render_jobs_changed, touched)
                }
                Effect::MachinesChanged(names) => {
                    if let Some(h) = &mut self.http {
                        h.note_change();
                    }
                    self.notify_watchers(
                        &names,
                        |c| &c.machines,
                        protocol::render_machines_changed,
                        touched,
                    )
                }
            }
        }
        bmp_requests
    }

    /// Queue a notification of `changed` to every client whose watch (`watch`) selects any
    /// of it. Clients watching everything all get the same line, rendered once.
    fn notify_watchers<T: Ord + Clone>(
        &mut self,
        changed: &[T],
        watch: fn(&Client) -> &client::Watch<T>,
        render: fn(&[T]) -> Vec<u8>,
        touched: &mut Touched,
    ) {
        let for_all = render(changed);
        let keys: Vec<usize> = self.clients.keys().copied().collect();
        for key in keys {
            let own = match watch(&self.clients[&key]) {
                client::Watch::Nothing => continue,
                client::Watch::All => None,
                some => {
                    let selected: Vec<T> = some.select(changed).into_iter().cloned().collect();
                    if selected.is_empty() {
                        continue;
                    }
                    Some(render(&selected))
                }
            };
            self.send(key, own.as_deref().unwrap_or(&for_all), touched);
        }
    }
}
