//! The engine calls a deploy needs beyond single containers: a project's
//! containers with their compose labels, networks and volumes made or
//! removed, containers created from a full request, images looked up or
//! pulled, a finished container's exit code.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, EndpointSettings, NetworkConnectRequest,
    NetworkCreateRequest, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions,
    RemoveVolumeOptions,
};
use futures_util::StreamExt;

use super::{call_error, Engine};
use crate::deploy::project::diff::Running;
use crate::deploy::project::spec::{COMPOSE_HASH, COMPOSE_NUMBER};
use crate::error::CallError;
use crate::world::{COMPOSE_PROJECT, COMPOSE_SERVICE};

impl Engine {
    /// Every container (running or not) labelled with compose project
    /// `project`, but for one-off runs.
    pub async fn project_containers(&self, project: &str) -> Result<Vec<Running>, CallError> {
        let filters: HashMap<String, Vec<String>> = [(
            "label".to_string(),
            vec![format!("{COMPOSE_PROJECT}={project}")],
        )]
        .into();
        let list = self
            .docker()?
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| call_error(format!("list the containers of {project}"), e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                if labels
                    .get("com.docker.compose.oneoff")
                    .is_some_and(|v| v == "True")
                {
                    return None;
                }
                Some(Running {
                    id: c.id?,
                    name: c
                        .names
                        .and_then(|n| n.first().cloned())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    service: labels.get(COMPOSE_SERVICE)?.clone(),
                    number: labels.get(COMPOSE_NUMBER).and_then(|n| n.parse().ok()),
                    hash: labels.get(COMPOSE_HASH).cloned(),
                    status: match c.state {
                        Some(ContainerSummaryStateEnum::RUNNING) => "running".into(),
                        Some(s) => s.to_string(),
                        None => String::new(),
                    },
                    image: c.image.unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Creates (not starts) a container from a full request, then connects
    /// it to the networks after the first (API 1.41 takes one at create).
    pub async fn create_from(
        &self,
        name: &str,
        body: ContainerCreateBody,
        more_networks: Vec<(String, EndpointSettings)>,
    ) -> Result<String, CallError> {
        let docker = self.docker()?;
        let image = body.image.clone().unwrap_or_default();
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_string()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| call_error(format!("create {name} from {image}"), e))?;
        for (net, ep) in more_networks {
            let req = NetworkConnectRequest {
                container: created.id.clone(),
                endpoint_config: Some(ep),
            };
            if let Err(e) = docker.connect_network(&net, req).await {
                let _ = self.stop_and_remove(&created.id, 0).await;
                return Err(call_error(format!("connect {name} to {net}"), e));
            }
        }
        Ok(created.id)
    }

    /// Makes the network unless it exists; `true` when it was made.
    pub async fn ensure_network(
        &self,
        name: &str,
        driver: Option<&str>,
        labels: HashMap<String, String>,
    ) -> Result<bool, CallError> {
        let docker = self.docker()?;
        let filters: HashMap<String, Vec<String>> =
            [("name".to_string(), vec![name.to_string()])].into();
        let found = docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| call_error(format!("list networks named {name}"), e))?;
        // The filter matches substrings: compare whole names.
        if found.iter().any(|n| n.name.as_deref() == Some(name)) {
            return Ok(false);
        }
        docker
            .create_network(NetworkCreateRequest {
                name: name.to_string(),
                driver: driver.map(str::to_string),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(|e| call_error(format!("create network {name}"), e))?;
        Ok(true)
    }

    /// The networks (or, `volumes`, the volumes) labelled with compose
    /// project `project`, by name.
    pub async fn project_resources(
        &self,
        project: &str,
        volumes: bool,
    ) -> Result<Vec<String>, CallError> {
        let docker = self.docker()?;
        let filters: HashMap<String, Vec<String>> = [(
            "label".to_string(),
            vec![format!("{COMPOSE_PROJECT}={project}")],
        )]
        .into();
        if volumes {
            let list = docker
                .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
                    filters: Some(filters),
                }))
                .await
                .map_err(|e| call_error(format!("list the volumes of {project}"), e))?;
            return Ok(list
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| v.name)
                .collect());
        }
        let list = docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| call_error(format!("list the networks of {project}"), e))?;
        Ok(list.into_iter().filter_map(|n| n.name).collect())
    }

    /// Whether the network exists (an external one must).
    pub async fn network_exists(&self, name: &str) -> Result<bool, CallError> {
        match self
            .docker()?
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(call_error(format!("inspect network {name}"), e)),
        }
    }

    pub async fn remove_network(&self, name: &str) -> Result<(), CallError> {
        match self.docker()?.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(call_error(format!("remove network {name}"), e)),
        }
    }

    /// Makes the volume unless it exists (creating an existing one is a
    /// no-op for the engine).
    pub async fn ensure_volume(
        &self,
        name: &str,
        driver: Option<&str>,
        labels: HashMap<String, String>,
    ) -> Result<(), CallError> {
        self.docker()?
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_string()),
                driver: driver.map(str::to_string),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| call_error(format!("create volume {name}"), e))
    }

    pub async fn volume_exists(&self, name: &str) -> Result<bool, CallError> {
        match self.docker()?.inspect_volume(name).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(call_error(format!("inspect volume {name}"), e)),
        }
    }

    pub async fn remove_volume(&self, name: &str) -> Result<(), CallError> {
        match self
            .docker()?
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(call_error(format!("remove volume {name}"), e)),
        }
    }

    /// Pulls an image the engine does not have; each status line goes to `log`.
    pub async fn pull(
        &self,
        reference: &str,
        log: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), CallError> {
        let docker = self.docker()?;
        let mut s = docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(reference.to_string()),
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(item) = s.next().await {
            match item {
                Ok(info) => {
                    if let Some(st) = info.status {
                        log(&st);
                    }
                }
                Err(e) => return Err(call_error(format!("pull {reference}"), e)),
            }
        }
        Ok(())
    }

    /// The tags of the images whose repository is `repo` (`blog-web:4`, ...).
    pub async fn tags_of(&self, repo: &str) -> Result<Vec<String>, CallError> {
        let filters: HashMap<String, Vec<String>> =
            [("reference".to_string(), vec![format!("{repo}:*")])].into();
        let list = self
            .docker()?
            .list_images(Some(bollard::query_parameters::ListImagesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| call_error(format!("list the images of {repo}"), e))?;
        Ok(list
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .filter(|t| t.rsplit_once(':').is_some_and(|(r, _)| r == repo))
            .collect())
    }

    /// Untags (and, untagged, removes) an image; one a container still uses
    /// stays (the engine refuses: 409).
    pub async fn untag(&self, tag: &str) -> Result<(), CallError> {
        match self
            .docker()?
            .remove_image(
                tag,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(call_error(format!("remove image {tag}"), e)),
        }
    }

    /// The exit code of a container that has stopped; `None` while it runs.
    pub async fn exit_code(&self, id: &str) -> Result<Option<i64>, CallError> {
        let i = self
            .docker()?
            .inspect_container(id, None)
            .await
            .map_err(|e| call_error(format!("inspect {id}"), e))?;
        let state = i.state.unwrap_or_default();
        if state.running == Some(true) {
            return Ok(None);
        }
        Ok(state.exit_code)
    }
}
