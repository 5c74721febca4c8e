//! `upstream.area`: Agora's failover ladder for a region, as its "Ensure service reliability"
//! guide and its own REST clients build it — the primary domain (`api.agora.io` outside mainland
//! China, `api.sd-rtn.com` inside), the other suffix, then the area's regional domains in Agora's
//! order, on the primary suffix.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Area {
    /// Europe: `api-eu-west-1`, then `api-eu-central-1`.
    Eu,
    /// North America: `api-us-west-1`, then `api-us-east-1`.
    Us,
    /// Asia Pacific: `api-ap-southeast-1`, then `api-ap-northeast-1`.
    Ap,
    /// Mainland China: `api.sd-rtn.com` first; `api-cn-east-1`, then `api-cn-north-1`.
    Cn,
}

impl Area {
    /// The Console API's base URLs for this area, in the order they are tried.
    pub(crate) fn ladder(self) -> Vec<String> {
        let (primary, alternate) = match self {
            Area::Cn => ("sd-rtn.com", "agora.io"),
            _ => ("agora.io", "sd-rtn.com"),
        };
        let regional: [&str; 2] = match self {
            Area::Eu => ["api-eu-west-1", "api-eu-central-1"],
            Area::Us => ["api-us-west-1", "api-us-east-1"],
            Area::Ap => ["api-ap-southeast-1", "api-ap-northeast-1"],
            Area::Cn => ["api-cn-east-1", "api-cn-north-1"],
        };
        let mut domains = vec![format!("api.{primary}"), format!("api.{alternate}")];
        domains.extend(regional.iter().map(|prefix| format!("{prefix}.{primary}")));
        domains.into_iter().map(|domain| format!("https://{domain}/dev")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_area_tries_the_primary_the_other_suffix_then_its_regions() {
        assert_eq!(
            Area::Eu.ladder(),
            [
                "https://api.agora.io/dev",
                "https://api.sd-rtn.com/dev",
                "https://api-eu-west-1.agora.io/dev",
                "https://api-eu-central-1.agora.io/dev"
            ]
        );
        assert_eq!(
            Area::Cn.ladder(),
            [
                "https://api.sd-rtn.com/dev",
                "https://api.agora.io/dev",
                "https://api-cn-east-1.sd-rtn.com/dev",
                "https://api-cn-north-1.sd-rtn.com/dev"
            ]
        );
        assert_eq!(Area::Us.ladder()[2], "https://api-us-west-1.agora.io/dev");
        assert_eq!(Area::Ap.ladder()[3], "https://api-ap-northeast-1.agora.io/dev");
    }
}
