//! After the faults heal, every pair of live members shares one peer connection (issue 4,
//! point 1): the connections both sides dialled at once, and those to crashed boots, are
//! gone, and none was dialled twice. Each member's open connections are counted; with every
//! pair talking (heartbeats go both ways), one per other live member means one per pair.

use crate::cluster::Observations;

pub fn check(obs: &Observations) -> Result<(), String> {
    let peers = obs.peer_connections.len().saturating_sub(1);
    let off: Vec<String> = obs
        .peer_connections
        .iter()
        .filter(|(_, n)| **n != peers)
        .map(|(node, n)| format!("{node} has {n}"))
        .collect();
    if off.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "expected {peers} peer connections per live member: {}",
            off.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_with_a_spare_connection_fails() {
        let mut obs = Observations::default();
        assert!(check(&obs).is_ok(), "nothing measured");
        obs.peer_connections = [("n1", 2), ("n2", 2), ("n3", 2)]
            .map(|(n, c)| (n.to_owned(), c))
            .into();
        assert!(check(&obs).is_ok());
        obs.peer_connections.insert("n2".into(), 3);
        let err = check(&obs).unwrap_err();
        assert!(err.contains("n2 has 3"), "{err}");
    }
}
