//! Drain before acting: a container berth routes is taken out of rotation
//! and its in-flight requests finish before it is stopped, restarted or
//! removed; when the action fails, it goes back into rotation.

use std::time::{Duration, Instant};

use crate::world::{BackendState, Input};
use crate::{Inputs, SharedSnapshot};

/// A drain in force. Dropped without [`Drained::keep`] (the stop or restart
/// it was for failed, or the caller went away), it puts the container back in
/// rotation.
pub struct Drained {
    id: String,
    inputs: Inputs,
    /// Requests still open when the wait ended (drain timeout).
    pub open: usize,
    kept: bool,
}

impl Drained {
    /// The action went through: the drain lasts until the container's run ends.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        if !self.kept {
            let _ = self.inputs.send(Input::Undrain {
                id: std::mem::take(&mut self.id),
            });
        }
    }
}

/// Takes a routed, running container out of rotation and waits until the
/// proxy has stopped sending it requests and its in-flight ones are done, or
/// its drain timeout passed. `None`: berth does not route it.
pub async fn drain(snapshot: &SharedSnapshot, inputs: &Inputs, id: &str) -> Option<Drained> {
    let b = snapshot.load().backends.get(id).cloned()?;
    if b.state == BackendState::Stopped {
        return None;
    }
    let _ = inputs.send(Input::Drain { id: id.to_string() });
    let mut guard = Drained {
        id: id.to_string(),
        inputs: inputs.clone(),
        open: 0,
        kept: false,
    };
    let deadline = Instant::now() + b.drain_timeout;
    loop {
        let snap = snapshot.load();
        let draining = snap
            .backends
            .get(id)
            .is_none_or(|b| b.state != BackendState::Ready);
        guard.open = b.stats.inflight.load(std::sync::atomic::Ordering::Relaxed);
        if (draining && guard.open == 0) || Instant::now() >= deadline {
            return Some(guard);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_not_kept_is_undone() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let guard = |id: &str| Drained {
            id: id.into(),
            inputs: tx.clone(),
            open: 0,
            kept: false,
        };
        drop(guard("failed-stop"));
        guard("stopped").keep();
        match rx.try_recv() {
            Ok(Input::Undrain { id }) => assert_eq!(id, "failed-stop"),
            other => panic!("{other:?}"),
        }
        assert!(rx.try_recv().is_err(), "a kept drain stays");
    }
}
