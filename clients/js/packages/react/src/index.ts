// @herald/react: React bindings and a notification center for Herald.

export { HeraldProvider, useHerald } from "./context.js";
export type { Herald } from "./context.js";
export { useNotificationListener, useNotifications, usePreferences, useUnreadCount, useWebSocket } from "./hooks.js";
export type { NotificationsView, PreferencesView, WebSocketView } from "./hooks.js";
export { ConnectionStatus } from "./components/ConnectionStatus.js";
export { NotificationBell } from "./components/NotificationBell.js";
export type { NotificationBellProps } from "./components/NotificationBell.js";
export { NotificationCenter } from "./components/NotificationCenter.js";
export type { NotificationCenterProps } from "./components/NotificationCenter.js";
export { PreferencesPanel } from "./components/PreferencesPanel.js";
export { Toasts } from "./components/Toasts.js";
export type { ToastsProps } from "./components/Toasts.js";
