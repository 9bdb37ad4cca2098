// Readiness probe for scripts/services/kafka.sh: succeeds (exit 0) once the broker at
// BOOTSTRAP can create a topic and take a record from an idempotent producer, and, with "txn",
// once a transactional producer can also commit (which needs the transaction coordinator).
// Usage: java -cp <kafka classpath>:<dir of this class> KafkaReadyProbe BOOTSTRAP [txn] [TIMEOUT_S]
// Compiled by scripts/services/install.sh against the Kafka client jars it resolved.

import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringSerializer;

public final class KafkaReadyProbe {
  private static final String TOPIC = "__sessionize_ready";

  public static void main(String[] args) throws Exception {
    if (args.length < 1) {
      System.err.println("usage: KafkaReadyProbe BOOTSTRAP [txn] [TIMEOUT_S]");
      System.exit(2);
    }
    String bootstrap = args[0];
    boolean txn = args.length > 1 && args[1].equals("txn");
    long timeoutMs = 1000L * (args.length > 2 ? Long.parseLong(args[2]) : 60L);
    long deadline = System.currentTimeMillis() + timeoutMs;
    Exception last = null;
    while (System.currentTimeMillis() < deadline) {
      try {
        probe(bootstrap, txn);
        System.out.println("ready");
        return;
      } catch (Exception e) {
        last = e;
        Thread.sleep(500);
      }
    }
    System.err.println("kafka at " + bootstrap + " not ready after " + timeoutMs + " ms: " + last);
    if (last != null) {
      last.printStackTrace();
    }
    System.exit(1);
  }

  private static void probe(String bootstrap, boolean txn) throws Exception {
    Properties common = new Properties();
    common.put("bootstrap.servers", bootstrap);
    common.put("request.timeout.ms", "5000");
    common.put("default.api.timeout.ms", "10000");

    try (Admin admin = Admin.create(common)) {
      try {
        admin.createTopics(List.of(new NewTopic(TOPIC, 1, (short) 1))).all().get(10, TimeUnit.SECONDS);
      } catch (ExecutionException e) {
        if (!(e.getCause() instanceof TopicExistsException)) {
          throw e;
        }
      }
    }

    Properties p = new Properties();
    p.putAll(common);
    p.put("acks", "all");
    p.put("enable.idempotence", "true");
    p.put("max.block.ms", "10000");
    p.put("delivery.timeout.ms", "10000");
    p.put("key.serializer", StringSerializer.class.getName());
    p.put("value.serializer", StringSerializer.class.getName());
    if (txn) {
      p.put("transactional.id", "sessionize-ready-probe");
      p.put("transaction.timeout.ms", "10000");
    }
    try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
      if (txn) {
        producer.initTransactions();
        producer.beginTransaction();
        producer.send(new ProducerRecord<>(TOPIC, "probe", "txn"));
        producer.commitTransaction();
      } else {
        producer.send(new ProducerRecord<>(TOPIC, "probe", "plain")).get(10, TimeUnit.SECONDS);
      }
    }
  }
}
