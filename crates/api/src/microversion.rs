//! `OpenStack-API-Version` negotiation.

use std::fmt;

pub const SERVICE_TYPE: &str = "container-infrastructure-management";
const ACCEPTED_SERVICE_TYPES: [&str; 3] = [
    "container-infrastructure-management",
    "container-infrastructure",
    "container-infra",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
}

impl Version {
    pub const fn new(major: u64, minor: u64) -> Self {
        Self { major, minor }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

pub const MIN_VERSION: Version = Version::new(1, 1);
pub const MAX_VERSION: Version = Version::new(1, 14);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionError {
    InvalidServiceType,
    InvalidValue,
    /// Well-formed but outside the supported range.
    Unsupported(Version),
}

/// The version a request asks for; no header means the minimum, as upstream.
pub fn negotiate(header: Option<&str>) -> Result<Version, VersionError> {
    let Some(header) = header else {
        return Ok(MIN_VERSION);
    };
    let tokens: Vec<&str> = header.split_whitespace().collect();
    let [service, version] = tokens.as_slice() else {
        return Err(VersionError::InvalidValue);
    };
    if !ACCEPTED_SERVICE_TYPES.contains(&service.to_ascii_lowercase().as_str()) {
        return Err(VersionError::InvalidServiceType);
    }
    let requested = if version.eq_ignore_ascii_case("latest") {
        MAX_VERSION
    } else {
        let (major, minor) = version.split_once('.').ok_or(VersionError::InvalidValue)?;
        let parse = |part: &str| {
            if part.is_empty() || !part.chars().all(|c| c.is_ascii_digit()) {
                Err(VersionError::InvalidValue)
            } else {
                // Python's int() has no bound; beyond u64 the version is unsupported anyway.
                Ok(part.parse::<u64>().unwrap_or(u64::MAX))
            }
        };
        Version::new(parse(major)?, parse(minor)?)
    };
    if requested < MIN_VERSION || requested > MAX_VERSION {
        return Err(VersionError::Unsupported(requested));
    }
    Ok(requested)
}

/// The `description` upstream adds to the unsupported-version body for JSON clients.
pub fn unsupported_description(requested: Version) -> String {
    let range = format!("[{SERVICE_TYPE} {MIN_VERSION}, {SERVICE_TYPE} {MAX_VERSION}]");
    if requested.major != MAX_VERSION.major {
        format!(
            "Mutually exclusive versions requested. Version {requested} requested but not supported by this service.The supported version range is: {range}."
        )
    } else {
        format!(
            "Version {requested} was requested but the minor version is not supported by this service. The supported version range is: {range}."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_upstream() {
        assert_eq!(negotiate(None), Ok(MIN_VERSION));
        assert_eq!(negotiate(Some("container-infra latest")), Ok(MAX_VERSION));
        assert_eq!(negotiate(Some("container-infra LATEST")), Ok(MAX_VERSION));
        assert_eq!(
            negotiate(Some("Container-Infrastructure-Management 1.5")),
            Ok(Version::new(1, 5))
        );
        assert_eq!(
            negotiate(Some("container-infrastructure 1.10")),
            Ok(Version::new(1, 10))
        );
        assert_eq!(
            negotiate(Some("container-infra 1.99")),
            Err(VersionError::Unsupported(Version::new(1, 99)))
        );
        assert_eq!(
            negotiate(Some("container-infra 1.0")),
            Err(VersionError::Unsupported(Version::new(1, 0)))
        );
        assert_eq!(
            negotiate(Some("container-infra 2.0")),
            Err(VersionError::Unsupported(Version::new(2, 0)))
        );
        assert_eq!(
            negotiate(Some("compute 2.1")),
            Err(VersionError::InvalidServiceType)
        );
        assert_eq!(
            negotiate(Some("container-infra abc")),
            Err(VersionError::InvalidValue)
        );
        assert_eq!(negotiate(Some("1.5")), Err(VersionError::InvalidValue));
        assert_eq!(
            negotiate(Some("compute 2.1, container-infra 1.5")),
            Err(VersionError::InvalidValue)
        );
        assert_eq!(
            negotiate(Some("container-infra 1.-1")),
            Err(VersionError::InvalidValue)
        );
    }

    #[test]
    fn descriptions_match_upstream() {
        assert_eq!(
            unsupported_description(Version::new(1, 99)),
            "Version 1.99 was requested but the minor version is not supported by this service. The supported version range is: [container-infrastructure-management 1.1, container-infrastructure-management 1.14]."
        );
        assert!(unsupported_description(Version::new(2, 0)).starts_with(
            "Mutually exclusive versions requested. Version 2.0 requested but not supported by this service.The supported"
        ));
    }
}
