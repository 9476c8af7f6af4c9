//! A rolling upgrade really ran two builds side by side: in a run with upgrades
//! (`Action::Upgrade`), some upgraded node heard heartbeats of the old build (without the
//! next build's field) and had its new message kind answered `Unsupported` by an old node.
//! When every node was upgraded, the new build's nodes also read each other (heartbeats
//! with the field). Without this, a scenario could pass without mixing anything.

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    if obs.upgrades.is_empty() {
        return Ok(());
    }
    let sum = |i: usize| obs.upgrades.values().map(|s| s[i]).sum::<u64>();
    let (with, without, unsupported) = (sum(0), sum(1), sum(3));
    if without == 0 || unsupported == 0 {
        return Err(format!(
            "the upgraded nodes never talked to the old build (heartbeats without the new \
             field: {without}, kinds answered unsupported: {unsupported}): {:?}",
            obs.upgrades
        ));
    }
    if obs.upgrades.len() > 1 && with == 0 {
        return Err(format!(
            "upgraded nodes never read each other's new field: {:?}",
            obs.upgrades
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_that_mixed_nothing_fails() {
        let mut obs = Observations::default();
        assert!(check(&obs).is_ok(), "no upgrade, nothing to check");
        obs.upgrades.insert("n1".into(), [0, 5, 0, 3, 0]);
        assert!(check(&obs).is_ok());
        obs.upgrades.insert("n2".into(), [0, 0, 0, 0, 0]);
        assert!(
            check(&obs).is_err(),
            "two upgraded nodes never read each other"
        );
        obs.upgrades.insert("n2".into(), [4, 0, 2, 0, 2]);
        assert!(check(&obs).is_ok());
        obs.upgrades.insert("n1".into(), [0, 5, 0, 0, 0]);
        obs.upgrades.insert("n2".into(), [4, 0, 2, 0, 2]);
        assert!(check(&obs).is_err(), "no old node answered the new kind");
    }
}
