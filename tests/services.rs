//! The real services the test command provides answer and behave: Redis
//! takes commands, and the Kafka-protocol broker (tansu) creates a topic,
//! takes a message and hands it to a consumer group. A missing service
//! fails these tests with instructions; nothing is skipped.

mod common;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

#[tokio::test]
async fn redis_answers_and_stores() {
    let url = common::redis_url();
    let client = redis::Client::open(url.as_str()).unwrap_or_else(|error| panic!("{}", common::missing("Redis", &url, error)));
    let mut connection = tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection())
        .await
        .unwrap_or_else(|_| panic!("{}", common::missing("Redis", &url, "no answer within 5 s")))
        .unwrap_or_else(|error| panic!("{}", common::missing("Redis", &url, error)));
    let key = format!("histflow:selftest:{}", std::process::id());
    let _: () = redis::cmd("SET").arg(&key).arg("ok").arg("EX").arg(60).query_async(&mut connection).await.unwrap();
    let value: String = redis::cmd("GET").arg(&key).query_async(&mut connection).await.unwrap();
    assert_eq!(value, "ok");
}

#[tokio::test]
async fn kafka_broker_round_trips_through_a_consumer_group() {
    let brokers = common::kafka_brokers();
    let topic = format!("histflow-selftest-{}", std::process::id());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let created = admin
        .create_topics(
            [&NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap_or_else(|error| panic!("{}", common::missing("the Kafka broker", &brokers, error)));
    for outcome in created {
        outcome.unwrap_or_else(|(name, code)| panic!("creating topic {name} failed: {code}"));
    }

    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("message.timeout.ms", "10000").create().unwrap();
    producer
        .send(FutureRecord::to(&topic).key("k").payload("hello"), Duration::from_secs(10))
        .await
        .unwrap_or_else(|(error, _)| panic!("{}", common::missing("the Kafka broker", &brokers, error)));

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("{topic}-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("no message from the consumer group within 30 s")
        .unwrap();
    assert_eq!(message.payload(), Some(&b"hello"[..]));
    assert_eq!(message.key(), Some(&b"k"[..]));
}
