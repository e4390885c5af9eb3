//! MQTT out: publishes replies, then the offline status and the disconnect
//! once every other stage has finished.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Outgoing;
use crate::mqtt::{Client, PublishProps};

pub struct MqttOut {
    pub client: Client,
    pub replies: mpsc::Receiver<Outgoing>,
    pub status_topic: String,
    pub offline_payload: Vec<u8>,
    /// Cancelled when done, so mqtt_in stops polling.
    pub done: CancellationToken,
}

impl MqttOut {
    pub async fn run(mut self) {
        // Runs until every sender (intake, router, answer tasks) is gone: that
        // is the drain, so no accepted question's reply is dropped.
        while let Some(out) = self.replies.recv().await {
            let props = PublishProps {
                response_topic: None,
                correlation_data: out.to.correlation_data,
            };
            if let Err(e) = self
                .client
                .publish(&out.to.topic, out.payload, false, props)
                .await
            {
                tracing::error!(topic = %out.to.topic, error = %e, "cannot publish a reply");
            }
        }
        if let Err(e) = self
            .client
            .publish(
                &self.status_topic,
                self.offline_payload,
                true,
                PublishProps::default(),
            )
            .await
        {
            tracing::warn!(error = %e, "cannot publish the offline status");
        }
        let _ = self.client.disconnect().await;
        self.done.cancel();
        tracing::debug!("mqtt_out stopped");
    }
}
