//! The cluster as the operator sees it through the agent (which knows the store).
use super::{Agent, AgentError};
use crate::cluster::{self, NodeRecord, NodeStatus};

impl Agent {
    pub(super) async fn node_list(&self) -> Result<Vec<NodeStatus>, AgentError> {
        let member = self.cluster.as_ref().ok_or(AgentError::NotClustered)?;
        Ok(cluster::list_nodes(member.store()).await?)
    }

    pub(super) async fn node_del(&self, name: &str) -> Result<NodeRecord, AgentError> {
        let member = self.cluster.as_ref().ok_or(AgentError::NotClustered)?;
        Ok(cluster::delete_node(member.store(), name).await?)
    }
}
