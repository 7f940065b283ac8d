//! `ec2_sd_configs`: instances from EC2's Query API (`DescribeInstances`, paged, with the
//! configured filters; `DescribeAvailabilityZones` once for the zone IDs), signed with AWS
//! Signature Version 4 (service `ec2`), every `refresh_interval`, with the labels Prometheus
//! sets (`discovery/aws/ec2.go`). A failed refresh keeps the last list and is counted.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::kubernetes::sanitize;
use super::{Command, TargetGroup};
use crate::config::Ec2SdConfig;
use crate::http::xml::{Node, parse_xml};
use crate::selfmetrics::SdStats;

const MAX_BODY: usize = 64 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);
const API_VERSION: &str = "2016-11-15";

/// Refreshes until `stop`; each list that changed is sent.
pub fn run(
    cfg: &Ec2SdConfig,
    job: &str,
    provider: u64,
    tx: &Sender<Command>,
    stop: &AtomicBool,
    stats: &SdStats,
) {
    let mut zones: Option<BTreeMap<String, String>> = None;
    let poll = super::Poll {
        job,
        provider,
        tx,
        stop,
        interval: cfg.refresh_interval,
        failures: &stats.ec2_failures,
        what: "ec2",
    };
    poll.run(|| {
        crate::runtime::block_on(refresh(cfg, &mut zones))
            .map_err(|e| format!("cannot start an executor for the request: {e}"))?
            .map(|g| vec![g])
    });
}

/// One signed Query API call: `params` (after `Action` and `Version`) as a form body.
async fn call(
    cfg: &Ec2SdConfig,
    action: &str,
    params: &[(String, String)],
) -> Result<Node, String> {
    let mut body = format!("Action={action}&Version={API_VERSION}");
    for (k, v) in params {
        body.push('&');
        crate::http::query_escape(&mut body, k);
        body.push('=');
        crate::http::query_escape(&mut body, v);
    }
    // The form encoding AWS expects: spaces as %20.
    let body = body.replace('+', "%20");
    cfg.sigv4.prepare().await?;
    let creds = cfg.sigv4.credentials()?;
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let sign = |host: &str, path: &str| {
        let headers = [("Content-Type", content_type)];
        let req = crate::http::sigv4::Request {
            method: "POST",
            host,
            path_and_query: path,
            headers: &headers,
            body: body.as_bytes(),
        };
        let mut lines = format!("Content-Type: {content_type}\r\n");
        lines.push_str(&crate::http::sigv4::sign(
            &req,
            &creds,
            &cfg.sigv4.region,
            "ec2",
            std::time::SystemTime::now(),
        ));
        Ok(lines)
    };
    let r = super::http::request(
        &cfg.http,
        &cfg.endpoint,
        ("POST", &cfg.endpoint.path_and_query, body.as_bytes()),
        &sign,
        TIMEOUT,
        MAX_BODY,
    )
    .await?;
    let text = String::from_utf8_lossy(&r.body);
    let doc = parse_xml(&text).map_err(|e| format!("{action}: cannot parse the answer: {e}"))?;
    if r.status != 200 {
        let code = doc.find("Code").map(|n| n.text.as_str()).unwrap_or("");
        let message = doc.find("Message").map(|n| n.text.as_str()).unwrap_or("");
        return Err(format!("{action}: HTTP {}: {code}: {message}", r.status));
    }
    Ok(doc)
}

async fn refresh(
    cfg: &Ec2SdConfig,
    zones: &mut Option<BTreeMap<String, String>>,
) -> Result<TargetGroup, String> {
    if zones.is_none() {
        let doc = call(cfg, "DescribeAvailabilityZones", &[]).await?;
        let mut m = BTreeMap::new();
        for z in doc
            .child("availabilityZoneInfo")
            .iter()
            .flat_map(|n| n.children("item"))
        {
            m.insert(z.text_of("zoneName"), z.text_of("zoneId"));
        }
        *zones = Some(m);
    }
    let zones = zones.as_ref().map_or(&BTreeMap::new(), |z| z).clone();
    let mut params: Vec<(String, String)> = Vec::new();
    for (i, (name, values)) in cfg.filters.iter().enumerate() {
        params.push((format!("Filter.{}.Name", i + 1), name.clone()));
        for (k, v) in values.iter().enumerate() {
            params.push((format!("Filter.{}.Value.{}", i + 1, k + 1), v.clone()));
        }
    }
    let mut targets = Vec::new();
    let mut token = String::new();
    loop {
        let mut p = params.clone();
        if !token.is_empty() {
            p.push(("NextToken".into(), token.clone()));
        }
        let doc = call(cfg, "DescribeInstances", &p).await?;
        for r in doc
            .child("reservationSet")
            .iter()
            .flat_map(|n| n.children("item"))
        {
            let owner = r.child("ownerId").map(|n| n.text.clone());
            for inst in r
                .child("instancesSet")
                .iter()
                .flat_map(|n| n.children("item"))
            {
                if let Some(t) = instance_labels(cfg, &zones, owner.as_deref(), inst) {
                    targets.push(t);
                }
            }
        }
        token = doc
            .child("nextToken")
            .map(|n| n.text.clone())
            .unwrap_or_default();
        if token.is_empty() {
            break;
        }
    }
    Ok(TargetGroup {
        source: cfg.sigv4.region.clone(),
        targets,
        labels: Vec::new(),
    })
}

/// Prometheus' labels of one instance; `None` for an instance without a private IP.
fn instance_labels(
    cfg: &Ec2SdConfig,
    zones: &BTreeMap<String, String>,
    owner: Option<&str>,
    inst: &Node,
) -> Option<Vec<(String, String)>> {
    const P: &str = "__meta_ec2_";
    let private_ip = inst.child("privateIpAddress")?.text.clone();
    let mut l: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        l.insert(format!("{P}{k}"), v);
    };
    set("instance_id", inst.text_of("instanceId"));
    if let Some(o) = owner {
        set("owner_id", o.to_string());
    }
    set("private_ip", private_ip.clone());
    if let Some(n) = inst.child("privateDnsName") {
        set("private_dns_name", n.text.clone());
    }
    if let Some(n) = inst.child("platform") {
        set("platform", n.text.clone());
    }
    if let Some(ip) = inst.child("ipAddress") {
        set("public_ip", ip.text.clone());
        set("public_dns_name", inst.text_of("dnsName"));
    }
    set("ami", inst.text_of("imageId"));
    let zone = inst
        .child("placement")
        .map(|p| p.text_of("availabilityZone"))
        .unwrap_or_default();
    set(
        "availability_zone_id",
        zones.get(&zone).cloned().unwrap_or_default(),
    );
    set("availability_zone", zone);
    set(
        "instance_state",
        inst.child("instanceState")
            .map(|s| s.text_of("name"))
            .unwrap_or_default(),
    );
    set("instance_type", inst.text_of("instanceType"));
    if let Some(n) = inst.child("instanceLifecycle") {
        set("instance_lifecycle", n.text.clone());
    }
    if let Some(n) = inst.child("architecture") {
        set("architecture", n.text.clone());
    }
    set("region", cfg.sigv4.region.clone());
    if let Some(vpc) = inst.child("vpcId") {
        set("vpc_id", vpc.text.clone());
        set("primary_subnet_id", inst.text_of("subnetId"));
        let mut subnets: Vec<String> = Vec::new();
        let mut ipv6: Vec<String> = Vec::new();
        let mut primary_ipv6: Vec<(u32, String)> = Vec::new();
        for eni in inst
            .child("networkInterfaceSet")
            .iter()
            .flat_map(|n| n.children("item"))
        {
            let Some(subnet) = eni.child("subnetId") else {
                continue;
            };
            if !subnets.contains(&subnet.text) {
                subnets.push(subnet.text.clone());
            }
            let index: u32 = eni
                .child("attachment")
                .map(|a| a.text_of("deviceIndex"))
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            for a in eni
                .child("ipv6AddressesSet")
                .iter()
                .flat_map(|n| n.children("item"))
            {
                let addr = a.text_of("ipv6Address");
                ipv6.push(addr.clone());
                if a.text_of("isPrimaryIpv6") == "true" {
                    primary_ipv6.push((index, addr));
                }
            }
        }
        let joined = |v: &[String]| format!(",{},", v.join(","));
        set("subnet_id", joined(&subnets));
        if !ipv6.is_empty() {
            set("ipv6_addresses", joined(&ipv6));
        }
        if !primary_ipv6.is_empty() {
            // By interface index, as Prometheus lists them.
            let max = primary_ipv6.iter().map(|(i, _)| *i).max().unwrap_or(0) as usize;
            let mut by_index = vec![String::new(); max + 1];
            for (i, a) in primary_ipv6 {
                by_index[i as usize] = a;
            }
            set("primary_ipv6_addresses", joined(&by_index));
        }
    }
    for tag in inst.child("tagSet").iter().flat_map(|n| n.children("item")) {
        let (Some(k), Some(v)) = (tag.child("key"), tag.child("value")) else {
            continue;
        };
        l.insert(format!("{P}tag_{}", sanitize(&k.text)), v.text.clone());
    }
    l.insert(
        "__address__".into(),
        crate::http::join_host_port(&private_ip, cfg.port),
    );
    Some(l.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_elements_text_and_entities() {
        let doc = parse_xml(
            "<?xml version=\"1.0\"?>\n<R xmlns=\"x\"><a>1 &amp; 2</a><b><c/><c>&#65;&#x42;</c></b><!-- n --><d><![CDATA[<raw>]]></d></R>",
        )
        .unwrap();
        assert_eq!(doc.name, "R");
        assert_eq!(doc.text_of("a"), "1 & 2");
        assert_eq!(doc.child("b").unwrap().children("c").count(), 2);
        assert_eq!(doc.find("c").unwrap().text, "");
        assert_eq!(
            doc.child("b").unwrap().children("c").nth(1).unwrap().text,
            "AB"
        );
        assert_eq!(doc.text_of("d"), "<raw>");
        assert!(parse_xml("<a><b></a>").is_err());
        assert!(parse_xml("<a>").is_err());
    }
}
