//! `amqp_server` as a list: the nodes of one RabbitMQ cluster, `URL[, URL…]`, and
//! `amqp_queue_type`, the kind of queue the daemons declare on it.
//!
//! Every URL follows the rules of a single one ([`AmqpUrl`]); they name one user and one
//! vhost, since the nodes of a cluster share both (`amqp_password` of `secret.ini` fills in
//! each URL without a password). A comma inside a URL is written `%2C`.

use std::borrow::Cow;
use std::fmt;

use crate::amqp::AmqpUrl;
use crate::value::{Invalid, ValueResult};

/// Most nodes one `amqp_server` may list.
pub const MAX_AMQP_SERVERS: usize = 16;

/// The broker nodes of `amqp_server`, in the order written (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpServers {
    urls: Vec<AmqpUrl>,
}

impl AmqpServers {
    /// Parses `URL[, URL…]`; the error says what was expected or what is refused.
    pub(crate) fn parse(s: &str) -> ValueResult<AmqpServers> {
        let mut urls: Vec<AmqpUrl> = Vec::new();
        for part in s.split(',') {
            let url = AmqpUrl::parse(part.trim()).map_err(|e| {
                Invalid::Expected(Cow::Owned(format!("{e}, or several separated by commas")))
            })?;
            if let Some(first) = urls.first() {
                if first.user() != url.user() || first.vhost() != url.vhost() {
                    return Err(Invalid::Refused(Cow::Borrowed(
                        "the URLs of amqp_server are nodes of one cluster: give them one user \
                         and one vhost",
                    )));
                }
                if urls.iter().any(|u| u.authority() == url.authority()) {
                    return Err(Invalid::Refused(Cow::Owned(format!(
                        "node {} is listed twice",
                        url.authority()
                    ))));
                }
            }
            urls.push(url);
        }
        if urls.len() > MAX_AMQP_SERVERS {
            return Err(Invalid::Refused(Cow::Owned(format!(
                "more than {MAX_AMQP_SERVERS} broker nodes"
            ))));
        }
        Ok(AmqpServers { urls })
    }

    /// The nodes, in the order written.
    pub fn urls(&self) -> &[AmqpUrl] {
        &self.urls
    }

    /// How many nodes are listed.
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Never true (a list has at least one node); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The user name of every URL (one for all).
    pub fn user(&self) -> Option<&str> {
        self.urls.first().and_then(AmqpUrl::user)
    }

    /// The full URLs joined by `,`, each with `fallback_password` filled in as
    /// [`AmqpUrl::to_url_with`] does. Contains passwords: do not log it.
    pub fn to_url_with(&self, fallback_password: Option<&str>) -> String {
        self.urls
            .iter()
            .map(|u| u.to_url_with(fallback_password))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The URLs joined by `, `, passwords shown as `***`.
impl fmt::Display for AmqpServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, u) in self.urls.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{u}")?;
        }
        Ok(())
    }
}

/// `amqp_queue_type`: what kind of queue `lbs` and the balancers' queues are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// A quorum queue (`x-queue-type = quorum`): replicated on the cluster's nodes (Raft);
    /// a confirm means a majority has the message.
    Quorum,
    /// A classic queue on one node: what a single broker uses.
    Classic,
}

impl QueueType {
    /// `quorum` or `classic`.
    pub(crate) fn parse(v: &str) -> ValueResult<QueueType> {
        match v.to_ascii_lowercase().as_str() {
            "quorum" => Ok(QueueType::Quorum),
            "classic" => Ok(QueueType::Classic),
            _ => Err(Invalid::Expected(Cow::Borrowed("quorum or classic"))),
        }
    }

    /// The default for `servers`: quorum queues on a cluster (several nodes listed),
    /// classic queues on a single broker (so a one-URL config declares what it always did).
    pub fn default_for(servers: &AmqpServers) -> QueueType {
        if servers.len() > 1 {
            QueueType::Quorum
        } else {
            QueueType::Classic
        }
    }

    /// `quorum` or `classic`, as RabbitMQ's `x-queue-type` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_a_list_of_one() {
        let s = AmqpServers::parse("amqp://ipvs@b1:5672/v").unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s.to_url_with(Some("pw")), "amqp://ipvs:pw@b1:5672/v");
        assert_eq!(QueueType::default_for(&s), QueueType::Classic);
    }

    #[test]
    fn several_nodes_keep_their_order_and_share_the_password() {
        let s = AmqpServers::parse(
            "amqp://ipvs@192.0.2.1/v, amqps://ipvs@[2001:db8::2]:5671/v,amqp://ipvs:own@b3/v",
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.user(), Some("ipvs"));
        assert_eq!(
            s.to_url_with(Some("p,w")),
            "amqp://ipvs:p%2Cw@192.0.2.1/v,amqps://ipvs:p%2Cw@[2001:db8::2]:5671/v,amqp://ipvs:own@b3/v"
        );
        assert_eq!(
            s.to_string(),
            "amqp://ipvs@192.0.2.1/v, amqps://ipvs@[2001:db8::2]:5671/v, amqp://ipvs:***@b3/v"
        );
        assert_eq!(QueueType::default_for(&s), QueueType::Quorum);
    }

    #[test]
    fn mixed_users_vhosts_duplicates_and_empties_are_refused() {
        for bad in [
            "amqp://a@b1/v,amqp://c@b2/v",
            "amqp://a@b1/v,amqp://a@b2/w",
            "amqp://a@b1/v,amqp://a@b1/v",
            "amqp://a@b1/v,",
            "amqp://a@b1/v,,amqp://a@b2/v",
            "amqp://a@b1/v,http://b2/",
        ] {
            assert!(AmqpServers::parse(bad).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..=MAX_AMQP_SERVERS)
            .map(|i| format!("amqp://b{i}/"))
            .collect();
        assert!(AmqpServers::parse(&many.join(",")).is_err());
        assert!(AmqpServers::parse(&many[1..].join(",")).is_ok());
    }

    #[test]
    fn queue_types_parse() {
        assert_eq!(QueueType::parse("Quorum").unwrap(), QueueType::Quorum);
        assert_eq!(QueueType::parse("classic").unwrap(), QueueType::Classic);
        assert!(QueueType::parse("stream").is_err());
        assert_eq!(QueueType::Quorum.to_string(), "quorum");
    }
}
