//! The cluster template view.

use magnum_domain::cluster_template::ClusterTemplate;
use magnum_domain::time::Timestamp;
use magnum_types::{ClusterTemplateView, Link};

pub(crate) fn view(template: &ClusterTemplate, base_url: &str) -> ClusterTemplateView {
    ClusterTemplateView {
        uuid: template.uuid.to_string(),
        name: template.name.clone(),
        coe: template.coe.as_str().to_owned(),
        image_id: template.image_id.clone(),
        flavor_id: template.flavor_id.clone(),
        master_flavor_id: template.master_flavor_id.clone(),
        dns_nameserver: template.dns_nameserver.clone(),
        keypair_id: template.keypair_id.clone(),
        external_network_id: template.external_network_id.clone(),
        fixed_network: template.fixed_network.clone(),
        fixed_subnet: template.fixed_subnet.clone(),
        network_driver: template.network_driver.clone(),
        apiserver_port: template.apiserver_port,
        docker_volume_size: template.docker_volume_size,
        cluster_distro: template.cluster_distro.clone(),
        links: Link::self_and_bookmark(base_url, &format!("clustertemplates/{}", template.uuid)),
        http_proxy: template.http_proxy.clone(),
        https_proxy: template.https_proxy.clone(),
        no_proxy: template.no_proxy.clone(),
        volume_driver: template.volume_driver.clone(),
        registry_enabled: template.registry_enabled,
        labels: template.labels.as_map().clone(),
        tls_disabled: template.tls_disabled,
        public: template.public,
        server_type: template.server_type.as_str().to_owned(),
        insecure_registry: template.insecure_registry.clone(),
        docker_storage_driver: template.docker_storage_driver.clone(),
        master_lb_enabled: template.master_lb_enabled,
        floating_ip_enabled: template.floating_ip_enabled,
        project_id: template.project_id.clone(),
        user_id: template.user_id.clone(),
        hidden: template.hidden,
        tags: template.tags.clone(),
        driver: template.driver.clone(),
        created_at: Some(template.created_at.to_wire()),
        updated_at: template.updated_at.map(Timestamp::to_wire),
    }
}
