// Launcher for Apache Iceberg's REST catalog test fixture (the code the apache/iceberg-rest-fixture
// image runs) used by scripts/services/iceberg_rest.sh. It builds the backend catalog from the
// same CATALOG_* environment variables as the fixture (CATALOG_FOO__BAR_BAZ -> foo-bar.baz) and
// serves it through the fixture's own adapter and servlet, but with two differences that matter
// for tests running side by side on one machine:
//   - it listens on REST_HOST (default 127.0.0.1) instead of every interface;
//   - it does not set SO_REUSEPORT, so a port that is taken makes the start fail instead of two
//     servers silently sharing one port;
//   - with REST_CLIENT_CREDENTIAL=ID:SECRET and REST_TOKEN_LIFETIME_SECONDS=N it answers OAuth2
//     client-credentials requests at /v1/oauth/tokens itself, with tokens that expire after N
//     seconds, and refuses (401) every other request without a live token, as production
//     catalogs do (the fixture accepts any token forever), so that clients' token refresh is
//     tested; only /v1/config (the readiness probe) is answered without one. It logs "issued token N" for each token.
// The port comes from CATALOG_REST_PORT (property rest.port), or REST_PORT, default 8181.
// It lives in the fixture's package because the fixture's helpers are package-private.
// Compiled by scripts/services/install.sh against the classpath it resolved.

package org.apache.iceberg.rest;

import jakarta.servlet.DispatcherType;
import jakarta.servlet.Filter;
import jakarta.servlet.FilterChain;
import jakarta.servlet.ServletException;
import jakarta.servlet.ServletRequest;
import jakarta.servlet.ServletResponse;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.EnumSet;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.hadoop.conf.Configuration;
import org.apache.iceberg.CatalogProperties;
import org.apache.iceberg.CatalogUtil;
import org.apache.iceberg.catalog.Catalog;
import org.apache.iceberg.jdbc.JdbcCatalog;
import org.eclipse.jetty.compression.gzip.GzipCompression;
import org.eclipse.jetty.compression.server.CompressionHandler;
import org.eclipse.jetty.ee10.servlet.FilterHolder;
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
    String credential = System.getenv("REST_CLIENT_CREDENTIAL");
    String lifetime = System.getenv("REST_TOKEN_LIFETIME_SECONDS");
    if (credential != null && lifetime != null) {
      ExpiringTokens tokens = new ExpiringTokens(credential, Long.parseLong(lifetime));
      handler.addFilter(new FilterHolder(tokens), "/*", EnumSet.of(DispatcherType.REQUEST));
    }
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

  /** OAuth2 client credentials with tokens that expire, in front of the catalog. */
  static final class ExpiringTokens implements Filter {
    private final String credential;
    private final long lifetimeMillis;
    private final long lifetimeSeconds;
    private final Map<String, Long> expiries = new ConcurrentHashMap<>();
    private final AtomicLong issued = new AtomicLong();

    ExpiringTokens(String credential, long lifetimeSeconds) {
      this.credential = credential;
      this.lifetimeSeconds = lifetimeSeconds;
      this.lifetimeMillis = lifetimeSeconds * 1000;
    }

    @Override
    public void doFilter(ServletRequest req, ServletResponse resp, FilterChain chain)
        throws IOException, ServletException {
      HttpServletRequest request = (HttpServletRequest) req;
      HttpServletResponse response = (HttpServletResponse) resp;
      if (request.getRequestURI().endsWith("/v1/oauth/tokens")) {
        String id = request.getParameter("client_id");
        String secret = request.getParameter("client_secret");
        if (!"client_credentials".equals(request.getParameter("grant_type"))
            || !credential.equals(id + ":" + secret)) {
          send(response, 401, "{\"error\":\"invalid_client\"}");
          return;
        }
        long n = issued.incrementAndGet();
        String token = "token-" + n + "-" + java.util.UUID.randomUUID();
        expiries.put(token, System.currentTimeMillis() + lifetimeMillis);
        System.err.println("issued token " + n);
        send(
            response,
            200,
            "{\"access_token\":\"" + token + "\",\"token_type\":\"bearer\","
                + "\"issued_token_type\":\"urn:ietf:params:oauth:token-type:access_token\","
                + "\"expires_in\":" + lifetimeSeconds + "}");
        return;
      }
      // The service script's readiness probe asks for the configuration without a token.
      if (request.getRequestURI().endsWith("/v1/config")) {
        chain.doFilter(req, resp);
        return;
      }
      String header = request.getHeader("Authorization");
      String token = header != null && header.startsWith("Bearer ") ? header.substring(7) : "";
      Long expiry = expiries.get(token);
      if (expiry == null || expiry < System.currentTimeMillis()) {
        System.err.println("refused " + request.getMethod() + " " + request.getRequestURI()
            + (expiry == null ? ": no token" : ": expired token"));
        send(
            response,
            401,
            "{\"error\":{\"message\":\"Not authorized: the token is missing or expired\","
                + "\"type\":\"NotAuthorizedException\",\"code\":401}}");
        return;
      }
      chain.doFilter(req, resp);
    }

    private static void send(HttpServletResponse response, int status, String json)
        throws IOException {
      response.setStatus(status);
      response.setContentType("application/json");
      response.getOutputStream().write(json.getBytes(StandardCharsets.UTF_8));
    }
  }
}
