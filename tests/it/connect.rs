//! `distsync::connect` picks a backend from a URL, with typed errors.

use distsync::Error;

#[tokio::test]
async fn memory_url_gives_a_working_coordinator() {
    let coordinator = distsync::connect("memory://").await.unwrap();
    assert_eq!(coordinator.capabilities().backend, "memory");
}

#[tokio::test]
async fn unknown_scheme_is_an_invalid_url() {
    match distsync::connect("zookeeper://127.0.0.1:2181").await {
        Err(Error::InvalidUrl { url, reason }) => {
            assert_eq!(url, "zookeeper://127.0.0.1:2181");
            assert!(reason.contains("zookeeper"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unparsable_url_is_an_invalid_url() {
    assert!(matches!(
        distsync::connect("not a url").await,
        Err(Error::InvalidUrl { .. })
    ));
}

#[cfg(not(feature = "etcd"))]
#[tokio::test]
async fn etcd_without_its_feature_names_the_feature() {
    match distsync::connect("etcd://127.0.0.1:2379").await {
        Err(
            error @ Error::FeatureDisabled {
                feature: "etcd", ..
            },
        ) => {
            assert!(error.to_string().contains("feature `etcd`"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn redis_without_its_feature_names_the_feature() {
    assert!(matches!(
        distsync::connect("redis://127.0.0.1:6379").await,
        Err(Error::FeatureDisabled {
            feature: "redis",
            ..
        })
    ));
}

#[cfg(not(feature = "postgres"))]
#[tokio::test]
async fn postgres_without_its_feature_names_the_feature() {
    assert!(matches!(
        distsync::connect("postgres://u@127.0.0.1:5432/db").await,
        Err(Error::FeatureDisabled {
            feature: "postgres",
            ..
        })
    ));
}

#[tokio::test]
async fn a_url_without_a_scheme_separator_is_an_invalid_url() {
    assert!(matches!(
        distsync::connect("127.0.0.1:2379").await,
        Err(Error::InvalidUrl { .. })
    ));
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn a_multi_member_etcd_url_reaches_the_etcd_backend() {
    // An unreachable cluster: the error must come from the etcd backend (a
    // connection error), not from generic URL parsing.
    let result = distsync::connect("etcd://127.0.0.1:1,127.0.0.1:2").await;
    assert!(
        matches!(
            result,
            Err(Error::Connection {
                backend: "etcd",
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn memory_urls_with_one_name_share_a_store() {
    let a = distsync::connect("memory://connect-test").await.unwrap();
    let b = distsync::connect("memory://connect-test/").await.unwrap();
    let fresh = distsync::connect("memory://").await.unwrap();
    a.queue("q").unwrap().enqueue("item").await.unwrap();
    assert_eq!(fresh.queue("q").unwrap().len().await.unwrap(), 0);
    assert_eq!(b.queue("q").unwrap().dequeue().await.unwrap(), "item");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_cluster_url_is_known_and_its_errors_are_typed_without_the_password() {
    // No node answers: a connection error, after trying every node the URL names.
    let url = "redis+cluster://user:cluster-secret@127.0.0.1:1,127.0.0.1:2?connect_timeout=2s";
    let error = distsync::connect(url).await.expect_err(url);
    assert!(
        matches!(error, Error::Connection { .. }),
        "{url}: {error:?}"
    );
    assert!(
        !format!("{error} {error:?}").contains("cluster-secret"),
        "{error:?}"
    );
    // TLS to a cluster is not offered.
    let url = "rediss+cluster://user:cluster-secret@127.0.0.1:7000";
    let error = distsync::connect(url).await.expect_err(url);
    assert!(
        matches!(error, Error::Unsupported { .. }),
        "{url}: {error:?}"
    );
    assert!(
        !format!("{error} {error:?}").contains("cluster-secret"),
        "{error:?}"
    );
}

#[test]
fn every_scheme_belongs_to_one_driver_that_names_its_backend() {
    let mut seen = std::collections::BTreeSet::new();
    for driver in distsync::store::DRIVERS {
        assert_eq!((driver.capabilities)().backend, driver.name);
        for scheme in driver.schemes {
            assert!(seen.insert(*scheme), "`{scheme}` answered by two drivers");
            assert_eq!(*scheme, scheme.to_ascii_lowercase());
            let url = format!("{}://h", scheme.to_ascii_uppercase());
            let found = distsync::store::driver_for(&url).unwrap();
            assert_eq!(found.name, driver.name);
        }
    }
}

#[test]
fn a_built_driver_documents_every_scheme_in_its_url_forms_and_only_features_off_are_not_built() {
    for driver in distsync::store::DRIVERS {
        let feature_on = match driver.name {
            "memory" => true,
            "etcd" => cfg!(feature = "etcd"),
            "redis" => cfg!(feature = "redis"),
            "postgres" => cfg!(feature = "postgres"),
            "zookeeper" => cfg!(feature = "zookeeper"),
            "mysql" => cfg!(feature = "mysql"),
            "nats" => cfg!(feature = "nats"),
            other => panic!("a driver the facade has no feature for: {other}"),
        };
        assert_eq!(driver.built, feature_on, "{driver:?}");
        if driver.built {
            for scheme in driver.schemes {
                let form = format!("{scheme}://");
                assert!(driver.url_forms.contains(&form), "{driver:?} lacks {form}");
            }
        }
    }
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn every_redis_scheme_without_its_feature_names_the_feature() {
    for url in ["rediss://h", "redis+sentinel://h/s", "redis+cluster://h:1"] {
        match distsync::connect(url).await {
            Err(Error::FeatureDisabled { scheme, feature }) => {
                assert_eq!(feature, "redis");
                assert!(url.starts_with(&scheme), "{scheme} of {url}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}
