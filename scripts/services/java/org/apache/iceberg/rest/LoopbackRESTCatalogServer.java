// Launcher for Apache Iceberg's REST catalog test fixture (the code the apache/iceberg-rest-fixture
// image runs) used by scripts/services/iceberg_rest.sh. It builds the backend catalog from the
// same CATALOG_* environment variables as the fixture (CATALOG_FOO__BAR_BAZ -> foo-bar.baz) and
// serves it through the fixture's own adapter and servlet, but with two differences that matter
// for tests running side by side on one machine:
//   - it listens on REST_HOST (default 127.0.0.1) instead of every interface;
//   - it does not set SO_REUSEPORT, so a port that is taken makes the start fail instead of two
//     servers silently sharing one port.
// The port comes from CATALOG_REST_PORT (property rest.port), or REST_PORT, default 8181.
// It lives in the fixture's package because the fixture's helpers are package-private.
// Compiled by scripts/services/install.sh against the classpath it resolved.

package org.apache.iceberg.rest;

import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.iceberg.CatalogProperties;
import org.apache.iceberg.CatalogUtil;
import org.apache.iceberg.catalog.Catalog;
import org.apache.iceberg.jdbc.JdbcCatalog;
import org.eclipse.jetty.compression.gzip.GzipCompression;
import org.eclipse.jetty.compression.server.CompressionHandler;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;

public final class LoopbackRESTCatalogServer {
  private LoopbackRESTCatalogServer() {}

  public static void main(String[] args) throws Exception {
    Map<String, String> props = new java.util.HashMap<>(RCKUtils.environmentCatalogConfig());
    props.putIfAbsent(CatalogProperties.CATALOG_IMPL, JdbcCatalog.class.getName());
    props.putIfAbsent(CatalogProperties.URI, "jdbc:sqlite::memory:");
    props.putIfAbsent("jdbc.schema-version", "V1");
    String warehouse = props.get(CatalogProperties.WAREHOUSE_LOCATION);
    if (warehouse == null || warehouse.isEmpty()) {
      throw new IllegalArgumentException("CATALOG_WAREHOUSE must be set");
    }
    String env = System.getenv("REST_PORT");
    int port = Integer.parseInt(props.getOrDefault(RESTCatalogServer.REST_PORT, env == null ? "8181" : env));
    String host = System.getenv().getOrDefault("REST_HOST", "127.0.0.1");
    String name = props.getOrDefault(RESTCatalogServer.CATALOG_NAME, "rest_backend");

    System.err.println("creating catalog " + name + " with properties " + redact(props));
    Catalog catalog = CatalogUtil.buildIcebergCatalog(name, props, new Configuration());
    RESTCatalogServer.CatalogContext context = new RESTCatalogServer.CatalogContext(catalog, props);

    ServletContextHandler handler = new ServletContextHandler(ServletContextHandler.NO_SESSIONS);
    handler.addServlet(new ServletHolder(new RESTCatalogServlet(new RESTServerCatalogAdapter(context))), "/*");
    CompressionHandler compression = new CompressionHandler();
    compression.putCompression(new GzipCompression());
    handler.insertHandler(compression);

    Server server = new Server();
    ServerConnector connector = new ServerConnector(server);
    connector.setHost(host);
    connector.setPort(port);
    server.addConnector(connector);
    server.setHandler(handler);
    server.setStopAtShutdown(true);
    server.start();
    System.err.println("iceberg REST catalog listening on http://" + host + ":" + connector.getLocalPort());
    server.join();
  }

  private static Map<String, String> redact(Map<String, String> props) {
    Map<String, String> out = new java.util.TreeMap<>();
    props.forEach(
        (k, v) -> {
          String key = k.toLowerCase(java.util.Locale.ROOT);
          boolean secret = key.contains("password") || key.contains("secret") || key.contains("token");
          out.put(k, secret ? "***" : v);
        });
    return out;
  }
}
