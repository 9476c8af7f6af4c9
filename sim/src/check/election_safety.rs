//! Election safety (Raft §5.2, Figure 3): at most one leader can be elected in a given
//! term. Every node reports each (term, leader) it holds; no term may have two.

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    match obs.leaders.iter().find(|(_, hosts)| hosts.len() > 1) {
        Some((term, hosts)) => Err(format!("term {term} had leaders {hosts:?}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leaders_in_one_term_fail() {
        let mut obs = Observations::default();
        obs.leaders.entry(2).or_default().insert("n1".into());
        obs.leaders.entry(3).or_default().insert("n2".into());
        assert!(check(&obs).is_ok());
        obs.leaders.entry(3).or_default().insert("n3".into());
        assert!(check(&obs).is_err());
    }
}
