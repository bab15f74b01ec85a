// Starts Swagger UI on the /docs page. It is a served file rather than an inline script so
// that the page's Content-Security-Policy can allow scripts from its own origin only.
"use strict";

const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis],
  // Swagger UI's default sends the document to an outside validator; never leave the machine.
  validatorUrl: null,
});
